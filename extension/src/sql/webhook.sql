-- Webhooks (Mail2Webhook, SPEC §7 and §12): each wallet's mailbox (its first opaque inbound
-- address and the signing secret) and its named webhooks, the URL and header rules, and the
-- mailbox helpers. The URL rules live here once, as SQL on `inet`, so delivery checks
-- resolved addresses with the same classification. The other fields' rules are in
-- webhook_fields.sql, the API functions in webhook_api.sql.

-- One row per wallet that has used Mail2Webhook, made on first need (webhook_set,
-- webhook_get), so wallets created before this existed get one the same way.
create table echovalue.mailboxes (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    mailbox   text not null unique,           -- local part of <mailbox>@<mail domain>, lowercase
    secret    text not null,                  -- Standard Webhooks signing secret, whsec_…
    created   timestamptz not null default now()
);

-- A wallet's webhooks, named by webhookId; the seeds' one webhook is `default`. headers are
-- sent with every delivery; format, options and template shape its body (format.rs). Mail to
-- the wallet's mailbox (and to <token>@…) goes to `default`; every other webhook has its own
-- opaque address. The rules of each field are the _webhook_*_error functions below.
create table echovalue.webhooks (
    wallet_id           bigint not null references echovalue.wallets (id) on delete cascade,
    name                text not null default 'default',
    url                 text not null,
    headers             jsonb not null default '{}'::jsonb,
    format              text not null default '',
    template            json,                 -- format custom only, the JSON text as written
    options             jsonb not null default '{}'::jsonb,
    include_attachments boolean not null default true,
    mailbox             text unique,          -- local part of its address; NULL for default
    created             timestamptz not null default now(),
    updated             timestamptz not null default now(),
    -- scheduled mode (SPEC §13) when cron is set: no mail; runs planned at next_run_at
    cron                text,
    timezone            text,
    active              boolean not null default true,
    next_run_at         timestamptz,          -- NULL while paused (or in mailbox mode)
    last_run_at         timestamptz,
    last_status         text,
    last_error          text,
    primary key (wallet_id, name),
    constraint webhooks_schedule_check check ((cron is null) = (timezone is null)
        and (next_run_at is null or cron is not null)
        and last_status in ('success', 'failure')),
    constraint webhooks_name_check check (name ~ '^[A-Za-z0-9_-]{1,30}$' and name <> 'call'),
    constraint webhooks_format_check
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    constraint webhooks_template_check check ((format = 'custom') = (template is not null)),
    constraint webhooks_mailbox_check check ((name = 'default') = (mailbox is null))
);
-- Planning reads only the schedules that are due: O(runs due), never every schedule.
create index webhooks_due_idx on echovalue.webhooks (next_run_at) where next_run_at is not null;

-- Mailboxes made before their address carried the wallet key (extension 0.11.0; 24 random hex
-- digits): the wallet of each, the wallet's mailbox or a named webhook's. The upgrade to 0.11.0
-- fills it; nothing adds to it after, and maintenance deletes a wallet's rows with the wallet.
-- A row whose webhook was deleted stays until then and routes nowhere: routing finds the
-- address among the wallet's mailboxes and webhooks. A reference table on Citus, as
-- token_legacy.
create table echovalue.mailbox_legacy (
    mailbox   text primary key,
    wallet_id bigint not null
);
create index mailbox_legacy_wallet_idx on echovalue.mailbox_legacy (wallet_id);

select pg_catalog.pg_extension_config_dump('echovalue.mailboxes', '');
select pg_catalog.pg_extension_config_dump('echovalue.mailbox_legacy', '');
select pg_catalog.pg_extension_config_dump('echovalue.webhooks', '');

-- A text setting `echovalue.<name>` (see _setting for why the library is called first).
create function echovalue._setting_text(p_name text) returns text
language plpgsql stable as $$
begin
    perform echovalue.token_format_ok('');
    return pg_catalog.current_setting('echovalue.' || p_name);
end;
$$;

-- What kind of address this is: 'public', or why it is not ('loopback', 'private', …).
-- The most specific listed network wins; an IPv6 address outside 2000::/3 is 'reserved'.
create function echovalue.address_classify(addr inet) returns text
language sql immutable strict parallel safe as $$
    select n.class
      from (values
        (inet '0.0.0.0/0', 'public'),
        ('0.0.0.0/8', 'unspecified'),
        ('10.0.0.0/8', 'private'),
        ('100.64.0.0/10', 'CGNAT'),
        ('127.0.0.0/8', 'loopback'),
        ('169.254.0.0/16', 'link-local'),
        ('172.16.0.0/12', 'private'),
        ('192.0.0.0/24', 'reserved'),
        ('192.0.2.0/24', 'documentation'),
        ('192.88.99.0/24', 'reserved'),
        ('192.168.0.0/16', 'private'),
        ('198.18.0.0/15', 'benchmarking'),
        ('198.51.100.0/24', 'documentation'),
        ('203.0.113.0/24', 'documentation'),
        ('224.0.0.0/4', 'multicast'),
        ('240.0.0.0/4', 'reserved'),
        ('255.255.255.255/32', 'broadcast'),
        ('::/0', 'reserved'),
        ('2000::/3', 'public'),
        ('::/128', 'unspecified'),
        ('::1/128', 'loopback'),
        ('::ffff:0:0/96', 'IPv4-mapped'),
        ('64:ff9b::/96', 'NAT64'),
        ('64:ff9b:1::/48', 'NAT64'),
        ('100::/64', 'discard-only'),
        ('2001::/32', 'Teredo'),
        ('2001:2::/48', 'benchmarking'),
        ('2001:10::/28', 'reserved'),
        ('2001:20::/28', 'reserved'),
        ('2001:db8::/32', 'documentation'),
        ('2002::/16', '6to4'),
        ('3fff::/20', 'documentation'),
        ('5f00::/16', 'reserved'),
        ('fc00::/7', 'unique-local'),
        ('fe80::/10', 'link-local'),
        ('fec0::/10', 'site-local'),
        ('ff00::/8', 'multicast')
      ) as n(net, class)
     where n.net >>= pg_catalog.set_masklen(addr, case pg_catalog.family(addr) when 4 then 32 else 128 end)
     order by pg_catalog.masklen(n.net) desc
     limit 1
$$;

-- Whether a webhook may reach an address of this class (address_classify): a public one, or
-- a loopback one while echovalue.webhook_allow_insecure is on (local testing). The one rule,
-- for a URL's address literal at configuration and for what its host resolves to at delivery.
create function echovalue._address_class_allowed(p_class text) returns boolean
language sql stable as $$
    select p_class = 'public'
        or (p_class = 'loopback' and echovalue._setting_text('webhook_allow_insecure')::boolean)
$$;

-- Why a webhook URL is refused, or NULL. HTTPS with a public host only; with
-- echovalue.webhook_allow_insecure also http and loopback. No DNS lookup: a name is judged
-- by its form, an address literal by address_classify (delivery re-checks what names resolve to).
create function echovalue._webhook_url_error(p_url text) returns text
language plpgsql stable as $$
declare
    v_max int := echovalue._setting('webhook_max_url_chars');
    v_insecure boolean := echovalue._setting_text('webhook_allow_insecure')::boolean;
    v_octet constant text := '(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
    v_m text[];
    v_scheme text;
    v_host text;
    v_port text;
    v_addr inet;
    v_class text;
begin
    if p_url is null or p_url = '' then
        return 'Bad Request: url is required';
    end if;
    if pg_catalog.char_length(p_url) > v_max then
        return pg_catalog.format('Bad Request: url must be at most %s characters', v_max);
    end if;
    -- URL parsers read a backslash as a slash; refusing it keeps one reading of the host
    if p_url ~ '[^\x21-\x7e]' or pg_catalog.strpos(p_url, '\') > 0 then
        return 'Bad Request: url must be printable ASCII without spaces or backslashes';
    end if;
    v_m := pg_catalog.regexp_match(p_url, '^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)');
    if v_m is null then
        return 'Bad Request: url must be an absolute https:// URL';
    end if;
    v_scheme := pg_catalog.lower(v_m[1]);
    if v_scheme <> 'https' and not (v_scheme = 'http' and v_insecure) then
        return 'Bad Request: url must use https';
    end if;
    if pg_catalog.strpos(v_m[2], '@') > 0 then
        return 'Bad Request: url must not contain credentials';
    end if;
    v_m := pg_catalog.regexp_match(v_m[2], '^(\[[^]]*\]|[^:\[\]]*)(:([0-9]*))?$');
    if v_m is null then
        return 'Bad Request: url host or port is malformed';
    end if;
    v_host := pg_catalog.regexp_replace(pg_catalog.lower(v_m[1]), '\.$', '');
    v_port := v_m[3];
    if v_port <> '' and (pg_catalog.char_length(v_port) > 5 or v_port::int not between 1 and 65535) then
        return 'Bad Request: url port must be 1 to 65535';
    end if;
    if v_host = '' then
        return 'Bad Request: url must have a host';
    end if;

    if v_host like '[%' then
        -- an IPv6 literal; a zone id or a prefix length does not name one host
        if v_host !~ '^\[[0-9a-f:.]+\]$' then
            return 'Bad Request: url host is not a valid IPv6 address';
        end if;
        begin
            v_addr := pg_catalog.substr(v_host, 2, pg_catalog.char_length(v_host) - 2)::inet;
        exception when invalid_text_representation then
            return 'Bad Request: url host is not a valid IPv6 address';
        end;
    elsif v_host ~ '(^|\.)(0x[0-9a-f]*|[0-9]+)$' then
        -- URL parsers read a numeric last label as IPv4 (127.1, 0x7f.1, 2130706433):
        -- only the canonical dotted quad is accepted, and judged as an address
        if v_host !~ ('^' || v_octet || '(\.' || v_octet || '){3}$') then
            return 'Bad Request: url host is not a canonical IPv4 address';
        end if;
        v_addr := v_host::inet;
    else
        if pg_catalog.char_length(v_host) > 253
           or v_host !~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' then
            return 'Bad Request: url host is not a valid domain name (use punycode for IDNs)';
        end if;
        if v_host = 'localhost' or v_host like '%.localhost' then
            v_class := 'loopback';
        elsif pg_catalog.strpos(v_host, '.') = 0
              or v_host ~ '\.(local|localdomain|internal|lan|home\.arpa|test|invalid|example|onion|alt)$' then
            return 'Bad Request: url host must be a public domain name';
        else
            return null;
        end if;
    end if;

    v_class := coalesce(v_class, echovalue.address_classify(v_addr));
    if echovalue._address_class_allowed(v_class) then
        return null;
    end if;
    return pg_catalog.format('Bad Request: url host is not a public address (%s)', v_class);
end;
$$;

-- Why custom webhook headers are refused, or NULL: an object of at most
-- echovalue.webhook_max_headers string values, names are HTTP tokens, unique ignoring case,
-- and none that the delivery itself sets (framing, hop-by-hop, content type, signature).
create function echovalue._webhook_headers_error(p_headers jsonb) returns text
language plpgsql stable as $$
declare
    v_max int := echovalue._setting('webhook_max_headers');
    v_max_value int := echovalue._setting('webhook_max_header_value_chars');
    v_name text;
    v_value jsonb;
begin
    if p_headers is null or pg_catalog.jsonb_typeof(p_headers) = 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(p_headers) <> 'object' then
        return 'Bad Request: headers must be an object of strings';
    end if;
    if (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(p_headers)) > v_max then
        return pg_catalog.format('Bad Request: at most %s headers', v_max);
    end if;
    for v_name, v_value in select e.key, e.value from pg_catalog.jsonb_each(p_headers) e order by e.key loop
        if v_name !~ '^[-!#$%&''*+.^_`|~0-9A-Za-z]{1,64}$' then
            return 'Bad Request: header names must be HTTP tokens of 1 to 64 characters';
        end if;
        if pg_catalog.lower(v_name) in ('connection', 'keep-alive', 'proxy-authenticate',
                'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding',
                'upgrade', 'host', 'content-length', 'content-type', 'content-encoding', 'expect')
           or pg_catalog.lower(v_name) like 'webhook-%' then
            return pg_catalog.format('Bad Request: header %s is set by the service', v_name);
        end if;
        if pg_catalog.jsonb_typeof(v_value) <> 'string' then
            return pg_catalog.format('Bad Request: header %s must be a string', v_name);
        end if;
        if pg_catalog.char_length(v_value #>> '{}') > v_max_value then
            return pg_catalog.format('Bad Request: header %s must be at most %s characters', v_name, v_max_value);
        end if;
        if (v_value #>> '{}') ~ '[^\x20-\x7e\t]' then
            return pg_catalog.format('Bad Request: header %s must be printable ASCII', v_name);
        end if;
    end loop;
    if (select pg_catalog.count(distinct pg_catalog.lower(k)) from pg_catalog.jsonb_object_keys(p_headers) k)
       <> (select pg_catalog.count(*) from pg_catalog.jsonb_object_keys(p_headers)) then
        return 'Bad Request: header names must be unique ignoring case';
    end if;
    return null;
end;
$$;

-- The wallet's mailbox row, made now if it has none (random id and secret, never derived
-- from the token). Concurrent first calls settle on one row.
create function echovalue._mailbox_ensure(p_wallet bigint) returns echovalue.mailboxes
language plpgsql volatile as $$
declare
    v_row echovalue.mailboxes;
begin
    select * into v_row from echovalue.mailboxes m where m.wallet_id = p_wallet;
    if found then
        return v_row;
    end if;
    insert into echovalue.mailboxes (wallet_id, mailbox, secret)
    values (p_wallet, echovalue._mailbox_new(p_wallet),
            'whsec_' || pg_catalog.encode(echovalue._random_bytes(32), 'base64'))
    on conflict (wallet_id) do nothing;
    select * into strict v_row from echovalue.mailboxes m where m.wallet_id = p_wallet;
    return v_row;
end;
$$;

-- A new mailbox id of wallet p_wallet: its wallet key and 24 random hex digits (96 bits), so
-- that the address names its wallet's shard (token.rs, mailbox_wallet).
create function echovalue._mailbox_new(p_wallet bigint) returns text
language sql volatile as $$
    select echovalue._wallet_key(p_wallet) || pg_catalog.encode(echovalue._random_bytes(12), 'hex')
$$;

-- The inbound address of a mailbox: <mailbox>@<echovalue.mail_domain>.
create function echovalue._mailbox_address(p_mailbox text) returns text
language sql stable as $$
    select p_mailbox || '@' || pg_catalog.lower(echovalue._setting_text('mail_domain'))
$$;
