-- echovalue 0.8.0 -> 0.9.0: every unique key of a wallet's rows holds wallet_id, and tokens
-- carry their wallet's key (issue 14, SPEC section 18: the schema can be sharded by wallet).
-- New wallets get random ids (echovalue._wallet_id_new()); the ids of the wallets made before
-- stay, and the first 8 of the 32 characters of a token made from now on are its wallet's id
-- in base36. A token made before is random all through: echovalue.token_legacy maps it to its
-- wallet, filled here once with every token there is.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- wallets: the id is no longer drawn from a sequence; the hash is found by a plain index
-- (the sequence leaves the extension's dump list first: dropping it would leave its OID there)
alter extension echovalue drop sequence echovalue.wallets_id_seq;
alter table echovalue.wallets alter column id drop identity;
alter table echovalue.wallets drop constraint wallets_hash_key;
create index wallets_hash_idx on echovalue.wallets (hash);

create table echovalue.token_legacy (
    hash      bytea primary key,
    wallet_id bigint not null
);
insert into echovalue.token_legacy (hash, wallet_id)
select t.hash, t.wallet_id from echovalue.tokens t;
select pg_catalog.pg_extension_config_dump('echovalue.token_legacy', '');

-- tokens: keyed within their wallet, and their usage by (wallet, token)
alter table echovalue.token_usage drop constraint token_usage_token_id_fkey;
drop index echovalue.token_usage_token_id_idx;
alter table echovalue.tokens drop constraint tokens_pkey;
alter table echovalue.tokens drop constraint tokens_hash_key;
alter table echovalue.tokens drop constraint tokens_public_id_key;
drop index echovalue.tokens_wallet_id_idx;
alter table echovalue.tokens
    add constraint tokens_pkey primary key (wallet_id, id),
    add constraint tokens_wallet_id_hash_key unique (wallet_id, hash),
    add constraint tokens_wallet_id_public_id_key unique (wallet_id, public_id);
alter table echovalue.token_usage
    add constraint token_usage_wallet_id_token_id_fkey foreign key (wallet_id, token_id)
        references echovalue.tokens (wallet_id, id) on delete cascade;

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue._last_used(timestamptz);
drop function if exists echovalue._logs_newest(bigint, text, int);
drop function if exists echovalue._token_generate();

-- Functions new or changed in 0.9.0.

create or replace function echovalue._wallet_resolve(p_token text, p_method text, p_path text)
returns echovalue.caller
language plpgsql volatile as $$
declare
    v_caller echovalue.caller;
    v_stale boolean;
    v_hash bytea;
    v_wallet bigint;
begin
    -- Few statements and expressions: each costs a set-up in every transaction, and this runs
    -- on every request. A malformed token gets a NULL hash and wallet, which match no token;
    -- both are computed once here, not per row if the planner ever scans.
    v_hash := echovalue._token_hash(p_token);
    v_wallet := echovalue._token_wallet(p_token);
    for i in 1..2 loop
        select t.wallet_id, t.id, t.is_root, t.limit_per_request, t.limit_daily, t.limit_monthly,
               p_method, p_path, t.scopes, t.groups,
               t.last_used is null or t.last_used < pg_catalog.now() - interval '1 minute'
          into v_caller.wallet_id, v_caller.token_id, v_caller.is_root, v_caller.limit_per_request,
               v_caller.limit_daily, v_caller.limit_monthly, v_caller.method, v_caller.path,
               v_caller.scopes, v_caller.groups, v_stale
          from echovalue.tokens t
         where t.wallet_id = v_wallet and t.hash = v_hash and t.revoked is null;
        exit when found or i = 2;
        select l.wallet_id into v_wallet from echovalue.token_legacy l where l.hash = v_hash;
        exit when not found;
    end loop;
    if v_stale then
        -- SKIP LOCKED: a concurrent request of this token is already recording its use
        update echovalue.tokens t set last_used = pg_catalog.now()
         where t.wallet_id = v_caller.wallet_id
           and t.id = (select x.id from echovalue.tokens x
                        where x.wallet_id = v_caller.wallet_id and x.id = v_caller.token_id
                          for update skip locked);
    end if;
    return v_caller;
end;
$$;

create or replace function echovalue._last_used(p_last_used timestamptz, p_now timestamptz)
returns timestamptz
language sql immutable as $$
    select case when p_now - p_last_used < interval '1 hour' then p_last_used else p_now end
$$;

create or replace function echovalue._refusal_log_allowed(p_wallet bigint) returns boolean
language plpgsql volatile as $$
declare
    v_entries int;
begin
    insert into echovalue.refusal_log_rate as r (wallet_id, minute, entries)
    values (p_wallet, pg_catalog.date_trunc('minute', pg_catalog.now()), 1)
    on conflict (wallet_id) do update
       set minute = excluded.minute,
           entries = case when r.minute = excluded.minute then r.entries + 1 else 1 end
    returning r.entries into v_entries;
    return v_entries <= echovalue._setting('refusal_logs_per_minute');
end;
$$;

create or replace function echovalue._insufficient(
    p_caller echovalue.caller, p_endpoint text, p_limit_refusal text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_balance bigint;
    v_now timestamptz := pg_catalog.now();
begin
    update echovalue.wallets w set last_used = echovalue._last_used(w.last_used, v_now)
     where w.id = p_caller.wallet_id
    returning w.balance into v_balance;
    if v_balance is null then
        -- the wallet was purged while this request waited for its lock
        return echovalue._unauthorized();
    end if;
    if echovalue._refusal_log_allowed(p_caller.wallet_id) then
        perform echovalue._log(p_caller.wallet_id, p_endpoint, p_caller.method, p_caller.path, 402,
            coalesce((p_limit_refusal::json) ->> 'error_description', 'Insufficient credits'),
            0, v_balance);
    end if;
    if p_limit_refusal is not null then
        return echovalue._outcome(402, p_limit_refusal, 0, v_balance, 'application/json',
                                  echovalue._limit_headers(p_caller));
    end if;
    return echovalue._outcome(402, 'Insufficient credits', 0, v_balance,
                              p_headers => echovalue._limit_headers(p_caller));
end;
$$;

create or replace function echovalue._pay(
    p_caller echovalue.caller, p_operation text, p_units int default 1, p_group text default null
) returns echovalue.payment
language plpgsql volatile as $$
declare
    v_price echovalue.prices := echovalue._price(p_operation);
    -- (NULL scopes: the root token, or no token at all)
    v_forbidden boolean := coalesce(not v_price.scope = any (p_caller.scopes), false)
                           or coalesce(not p_group = any (p_caller.groups), false);
    v_cost int := v_price.credits * case when v_forbidden then 1 else p_units end;
    v_refusal text;
    v_balance bigint;
    v_alert boolean;
    v_now timestamptz := pg_catalog.now();
begin
    if v_cost < 0 then
        raise exception 'echovalue: _pay needs a price and units of at least 0'
            using errcode = 'invalid_parameter_value';
    end if;
    if v_cost > 0 and (p_caller.limit_per_request is not null or p_caller.limit_daily is not null
                       or p_caller.limit_monthly is not null) then
        perform from echovalue.wallets w where w.id = p_caller.wallet_id for no key update;
        v_refusal := echovalue._limits_refusal(p_caller, v_cost);
    end if;
    if v_refusal is null then
        update echovalue.wallets w
           set balance = w.balance - v_cost, last_used = echovalue._last_used(w.last_used, v_now)
         where w.id = p_caller.wallet_id and w.balance >= v_cost
        returning w.balance,
                  -- from at least the alert threshold to below it
                  w.balance < w.low_balance_threshold and w.balance + v_cost >= w.low_balance_threshold
             into v_balance, v_alert;
    end if;
    if v_balance is null then
        return row(v_price.endpoint, 0, null,
                   echovalue._insufficient(p_caller, v_price.endpoint, v_refusal))::echovalue.payment;
    end if;
    if v_cost > 0 and not p_caller.is_root then
        insert into echovalue.token_usage as u (wallet_id, token_id, hour, credits)
        values (p_caller.wallet_id, p_caller.token_id,
                pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC'), v_cost)
        on conflict (wallet_id, token_id, hour) do update set credits = u.credits + excluded.credits;
    end if;
    -- the rare cases behind one test: each plpgsql expression costs a set-up in every
    -- transaction, and this runs on every request
    if v_alert or v_forbidden then
        if v_alert then
            perform echovalue._alert_low_balance(p_caller.wallet_id, v_balance,
                (select w.low_balance_threshold from echovalue.wallets w where w.id = p_caller.wallet_id));
        end if;
        if v_forbidden then
            return row(v_price.endpoint, 0, null, echovalue._unlogged_or_finish(p_caller,
                       row(v_price.endpoint, v_cost, v_balance, null)::echovalue.payment,
                       403, 'Forbidden'))::echovalue.payment;
        end if;
    end if;
    return row(v_price.endpoint, v_cost, v_balance, null)::echovalue.payment;
end;
$$;

create or replace function echovalue._logs_newest(p_wallet bigint, p_type text, p_limit int)
returns setof echovalue.logs
-- (plpgsql, not SQL: Citus plans a SQL function's query on a distributed table only without
-- parameters)
language plpgsql stable as $$
begin
    return query
    (select * from echovalue.logs l
      where p_type is null and l.wallet_id = p_wallet and l.expires_at > pg_catalog.now()
      order by l.id desc limit p_limit)
    union all
    (select * from echovalue.logs l
      where p_type is not null and l.wallet_id = p_wallet and l.endpoint = p_type
        and l.expires_at > pg_catalog.now()
      order by l.id desc limit p_limit);
end;
$$;

create or replace function echovalue.token_new(
    client_addr inet default pg_catalog.inet_client_addr(),
    http_method text default 'POST',
    http_path text default '/token'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    -- the network of the address counts (an IPv6 client holds a /64; an IPv4 address mapped
    -- into IPv6, ::ffff:a.b.c.d, counts as the IPv4 one); unix-socket callers have no
    -- address: they share one bucket
    v_client inet := coalesce(pg_catalog.network(pg_catalog.set_masklen(client_addr,
        case when pg_catalog.family(client_addr) = 4 then echovalue._setting('token_rate_ipv4_prefix')
             when client_addr <<= inet '::ffff:0.0.0.0/96' then 96 + echovalue._setting('token_rate_ipv4_prefix')
             else echovalue._setting('token_rate_ipv6_prefix') end))::inet, inet '0.0.0.0/0');
    v_rate int := echovalue._setting('token_rate_seconds');
    v_start int := echovalue._setting('start_credits');
    v_allowed boolean;
    v_last timestamptz;
    v_cutoff timestamptz;
    v_token text;
    v_price echovalue.prices := echovalue._price('token_new');
    -- token_new is free by default; a priced one is paid from the starting credits if it can be
    v_cost int := case when v_price.credits <= v_start then v_price.credits else 0 end;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
begin
    if token_new.client_addr is distinct from pg_catalog.inet_client_addr()
       and not pg_catalog.pg_has_role(session_user, 'echovalue_gateway', 'MEMBER') then
        raise exception 'echovalue: only a member of echovalue_gateway may give token_new a client address'
            using errcode = 'insufficient_privilege';
    end if;
    -- (the cut-off is a value, not an expression of now(): Citus takes only immutable
    -- functions in an ON CONFLICT condition)
    v_cutoff := pg_catalog.now() - pg_catalog.make_interval(secs => v_rate);
    insert into echovalue.token_rate as r (client, last_at)
    values (v_client, pg_catalog.now())
    on conflict (client) do update set last_at = excluded.last_at
        where r.last_at <= v_cutoff
    returning true into v_allowed;
    if v_allowed is null then
        select r.last_at into v_last from echovalue.token_rate r where r.client = v_client;
        return echovalue._outcome(429, 'Too Many Requests', null, null,
            p_headers => pg_catalog.jsonb_build_object('retry-after', greatest(1, pg_catalog.ceil(
                v_rate - extract(epoch from pg_catalog.now() - v_last)))::bigint::text));
    end if;

    -- a random wallet id, drawn again in the rare case it is taken (1 in 2.8e12 per wallet)
    loop
        v_token := echovalue._token_generate(echovalue._wallet_id_new());
        insert into echovalue.wallets (id, balance, hash)
        values (echovalue._token_wallet(v_token), v_start - v_cost,
                pg_catalog.encode(echovalue._token_hash(v_token), 'hex'))
        on conflict (id) do nothing
        returning id into v_caller.wallet_id;
        exit when v_caller.wallet_id is not null;
    end loop;
    insert into echovalue.tokens (wallet_id, hash, is_root, label, prefix)
    values (v_caller.wallet_id, echovalue._token_hash(v_token), true, 'root',
            echovalue._token_prefix(v_token))
    returning id, is_root into v_caller.token_id, v_caller.is_root;
    v_caller.method := token_new.http_method;
    v_caller.path := token_new.http_path;
    v_paid := row(v_price.endpoint, v_cost, v_start - v_cost, null);
    return echovalue._finish(v_caller, v_paid, 200, v_token);
end;
$$;

create or replace function echovalue.kv_delete(
    token text,
    grp text,
    key text,
    http_method text default 'DELETE',
    http_path text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(kv_delete.token, kv_delete.http_method,
        coalesce(kv_delete.http_path, '/kv/' || kv_delete.grp || '/' || kv_delete.key));
    v_error text;
    v_paid echovalue.payment;
    v_live boolean;
    v_expires timestamptz;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_error := coalesce(echovalue._name_error('group', kv_delete.grp), echovalue._name_error('key', kv_delete.key));
    if v_error is not null then
        return echovalue._fail(v_caller, 'kv_delete', 400, v_error, p_group => kv_delete.grp);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_delete', p_group => kv_delete.grp);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- an expired row goes too, but the answer is as if it were already purged
    delete from echovalue.kv k
     where k.wallet_id = v_caller.wallet_id and k.grp = kv_delete.grp and k.key = kv_delete.key
    returning k.expires_at into v_expires;
    -- (compared here: Citus takes only immutable functions in RETURNING)
    v_live := v_expires > pg_catalog.now();
    if v_live is not true then
        return echovalue._finish(v_caller, v_paid, 404, 'Key Not Found');
    end if;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue.token_key_create(
    token text,
    spec text default '{}',
    http_method text default 'POST',
    http_path text default '/token/keys'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token_key_create.token,
        token_key_create.http_method, token_key_create.http_path);
    v_refusal echovalue.outcome;
    v_spec jsonb;
    v_error text;
    v_max int := echovalue._setting('max_tokens');
    v_paid echovalue.payment;
    v_new text;
    v_row echovalue.tokens;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_caller, 'token_key_create');
    if v_refusal.status is not null then
        return v_refusal;
    end if;
    begin
        -- (only an empty body is {}: blanks are not JSON)
        v_spec := coalesce(nullif(token_key_create.spec, ''), '{}')::jsonb;
    exception when data_exception or program_limit_exceeded then
        v_error := 'Bad Request: body must be JSON';
    end;
    v_error := coalesce(v_error, echovalue._key_spec_error(v_spec));
    -- the wallet's row lock makes the count and the insert one step for parallel creates
    perform from echovalue.wallets w where w.id = v_caller.wallet_id for no key update;
    if v_error is null
       and (select pg_catalog.count(*) from echovalue.tokens t
             where t.wallet_id = v_caller.wallet_id and t.revoked is null) >= v_max then
        v_error := pg_catalog.format(
            'Bad Request: a wallet may have at most %s live tokens; revoke one first', v_max);
    end if;
    if v_error is not null then
        return echovalue._fail(v_caller, 'token_key_create', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'token_key_create');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_new := echovalue._token_generate(v_caller.wallet_id);
    insert into echovalue.tokens as t
        (wallet_id, hash, label, prefix, limit_per_request, limit_daily, limit_monthly, scopes,
         groups)
    values (v_caller.wallet_id, echovalue._token_hash(v_new),
            v_spec ->> 'label', echovalue._token_prefix(v_new),
            (v_spec #>> '{limits,per_request}')::numeric::bigint,
            (v_spec #>> '{limits,daily}')::numeric::bigint,
            (v_spec #>> '{limits,monthly}')::numeric::bigint,
            coalesce(echovalue._key_list(v_spec -> 'scopes', echovalue._scope_names()),
                     echovalue._scope_defaults()),
            echovalue._key_list(v_spec -> 'groups'))
    returning * into v_row;
    return echovalue._finish(v_caller, v_paid, 200,
        pg_catalog.format('{"id":%s,"token":%s,"label":%s,"limits":%s,%s,"created":%s}',
            echovalue._json_str(v_row.public_id::text), echovalue._json_str(v_new),
            echovalue._json_str(v_row.label), echovalue._key_limits_json(v_row),
            echovalue._key_scopes_json(v_row), echovalue._json_str(echovalue._ts(v_row.created))),
        'application/json');
end;
$$;

create or replace function echovalue.token_key_list(
    token text,
    http_method text default 'GET',
    http_path text default '/token/keys'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token_key_list.token,
        token_key_list.http_method, token_key_list.http_path);
    v_refusal echovalue.outcome;
    v_paid echovalue.payment;
    v_body text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_caller, 'token_key_list');
    if v_refusal.status is not null then
        return v_refusal;
    end if;
    v_paid := echovalue._pay(v_caller, 'token_key_list');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- (row(t.*)::echovalue.tokens, not t: on Citus the query runs on a shard, whose rows are
    -- of the shard's own type)
    select '{"keys":[' || coalesce(pg_catalog.string_agg(
                                       echovalue._key_json(row(t.*)::echovalue.tokens), ','
                                       order by t.created, t.id), '') || ']}'
      into v_body
      from echovalue.tokens t where t.wallet_id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

create or replace function echovalue.token_key_revoke(
    token text,
    key_id text,
    http_method text default 'DELETE',
    http_path text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token_key_revoke.token,
        token_key_revoke.http_method,
        coalesce(token_key_revoke.http_path, '/token/keys/' || token_key_revoke.key_id));
    v_refusal echovalue.outcome;
    v_paid echovalue.payment;
    v_target echovalue.tokens;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_caller, 'token_key_revoke');
    if v_refusal.status is not null then
        return v_refusal;
    end if;
    v_paid := echovalue._pay(v_caller, 'token_key_revoke');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    if token_key_revoke.key_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        select * into v_target from echovalue.tokens t
         where t.wallet_id = v_caller.wallet_id and t.public_id = token_key_revoke.key_id::uuid
           for update;
    end if;
    if v_target.id is null then
        return echovalue._finish(v_caller, v_paid, 404, 'Not Found');
    end if;
    if v_target.is_root then
        return echovalue._finish(v_caller, v_paid, 400,
                                 'Bad Request: the root token cannot be revoked');
    end if;
    update echovalue.tokens t set revoked = coalesce(t.revoked, pg_catalog.now())
     where t.wallet_id = v_target.wallet_id and t.id = v_target.id;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue._kv_keys_page(
    p_wallet bigint, p_grp text, p_from text, p_after text, p_end text, p_limit int
) returns table (key text, expires_at timestamptz)
language plpgsql stable as $$
begin
    return query
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit)
    union all
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is not null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.key < p_end
        and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit);
end;
$$;

create or replace function echovalue._webhook_store(
    p_wallet bigint, p_name text, p_config jsonb, p_template text
) returns boolean
language plpgsql volatile as $$
declare
    v_old echovalue.webhooks;
    v_cron text := p_config -> 'schedule' ->> 'cron';
    v_zone text := p_config -> 'schedule' ->> 'timezone';
    v_active boolean := coalesce((p_config -> 'schedule' ->> 'active')::boolean, true);
    v_next timestamptz;
begin
    select * into v_old from echovalue.webhooks h where h.wallet_id = p_wallet and h.name = p_name;
    if not found and (select pg_catalog.count(*) from echovalue.webhooks h where h.wallet_id = p_wallet)
                     >= echovalue._setting('max_webhooks') then
        return false;
    end if;
    -- the next run: none while paused; kept while the schedule stays the same (a due run is
    -- not skipped by a rewrite); else computed from now
    v_next := case
        when v_cron is null or not v_active then null
        when v_old.cron = v_cron and v_old.timezone = v_zone and v_old.next_run_at is not null
            then v_old.next_run_at
        else echovalue.schedule_next(v_cron, v_zone, pg_catalog.now()) end;
    perform echovalue._mailbox_ensure(p_wallet);
    insert into echovalue.webhooks as h
        (wallet_id, name, url, headers, format, template, options, include_attachments, mailbox,
         cron, timezone, active, next_run_at, updated)
    values (p_wallet, p_name, p_config ->> 'url',
            case when pg_catalog.jsonb_typeof(p_config -> 'headers') = 'object'
                 then p_config -> 'headers' else '{}'::jsonb end,
            coalesce(p_config ->> 'format', ''),
            case when p_config ->> 'format' = 'custom' then p_template::json end,
            case when pg_catalog.jsonb_typeof(p_config -> 'options') = 'object'
                 then p_config -> 'options' else '{}'::jsonb end,
            coalesce((p_config ->> 'includeAttachments')::boolean, true),
            case when p_name <> 'default' then pg_catalog.encode(echovalue._random_bytes(12), 'hex') end,
            v_cron, v_zone, v_active, v_next, pg_catalog.now())
    -- (excluded.updated, not now(): Citus takes only immutable functions in DO UPDATE SET)
    on conflict (wallet_id, name) do update
        set url = excluded.url, headers = excluded.headers, format = excluded.format,
            template = excluded.template, options = excluded.options,
            include_attachments = excluded.include_attachments, cron = excluded.cron,
            timezone = excluded.timezone, active = excluded.active,
            next_run_at = excluded.next_run_at, updated = excluded.updated;
    if v_next is distinct from v_old.next_run_at then
        -- the scheduler sleeps until the earliest next run: wake it to look again
        perform pg_catalog.pg_notify('echovalue_schedule', '');
    end if;
    return true;
end;
$$;

create or replace function echovalue._webhook_email(p_hook echovalue.webhooks) returns text
language plpgsql stable as $$
begin
    return (
    select echovalue._mailbox_address(coalesce(p_hook.mailbox,
               (select m.mailbox from echovalue.mailboxes m where m.wallet_id = p_hook.wallet_id))));
end;
$$;

create or replace function echovalue.webhook_get(
    token text,
    http_method text default 'GET',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_get.token, webhook_get.http_method,
                                                            webhook_get.http_path);
    v_paid echovalue.payment;
    v_mailbox echovalue.mailboxes;
    v_hash text;
    v_hook echovalue.webhooks;
    v_email text;
    v_body text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_get');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_mailbox := echovalue._mailbox_ensure(v_caller.wallet_id);
    v_email := echovalue._json_str(echovalue._mailbox_address(v_mailbox.mailbox));
    select w.hash into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = v_caller.wallet_id and h.name = 'default';
    if found then
        v_body := pg_catalog.format('{"webhook":%s,"headers":%s,"email":%s,"hash":%s,"secret":%s',
            echovalue._json_str(v_hook.url), echovalue._webhook_headers_json(v_hook.headers),
            v_email, echovalue._json_str(v_hash), echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s', v_email, echovalue._json_str(v_hash));
    end if;
    -- (row(h.*)::echovalue.webhooks, not h: on Citus the query runs on a shard, whose rows
    -- are of the shard's own type)
    v_body := v_body || ',"webhooks":[' || coalesce((
        select pg_catalog.string_agg(
                   echovalue._webhook_response(row(h.*)::echovalue.webhooks, v_hash), ',' order by h.name)
          from echovalue.webhooks h where h.wallet_id = v_caller.wallet_id), '') || ']}';
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

create or replace function echovalue._mail_quota_refusal(p_wallet bigint, p_bytes bigint) returns echovalue.smtp_reply
language plpgsql stable as $$
begin
    return (
    select row(452, '4.2.2 mailbox full; try again later')::echovalue.smtp_reply
     where echovalue._setting('mail_quota_mb') > 0
       and (select coalesce(sum(m.size_bytes), 0) from echovalue.messages m where m.wallet_id = p_wallet)
           + p_bytes > echovalue._setting('mail_quota_mb')::bigint * 1048576);
end;
$$;

create or replace function echovalue.maintenance_run() returns jsonb
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_batch int := echovalue._setting('maintenance_batch');
    v_kv bigint;
    v_logs bigint;
    v_rate bigint;
    v_usage bigint;
    v_revoked bigint;
    v_attachments bigint;
    v_messages bigint;
    v_unmessaged bigint;
    v_wallets bigint;
    v_wallet_ids bigint[];
    v_token_ids bigint[];
    v_hashes bytea[];
begin
    delete from echovalue.kv k
     where k.ctid = any (array(
         select x.ctid from echovalue.kv x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_kv = row_count;

    delete from echovalue.logs l
     where l.ctid = any (array(
         select x.ctid from echovalue.logs x
          where x.expires_at <= pg_catalog.now()
          limit v_batch for update skip locked));
    get diagnostics v_logs = row_count;

    delete from echovalue.token_rate r
     where r.ctid = any (array(
         select x.ctid from echovalue.token_rate x
          where x.last_at <= pg_catalog.now()
                - pg_catalog.make_interval(secs => echovalue._setting('token_rate_seconds'))
          limit v_batch for update skip locked));
    get diagnostics v_rate = row_count;

    -- Usage buckets older than the longest window (30 days, plus the hour it starts in).
    delete from echovalue.token_usage u
     where u.ctid = any (array(
         select x.ctid from echovalue.token_usage x
          where x.hour < pg_catalog.date_trunc('hour', pg_catalog.now() - interval '30 days', 'UTC')
          limit v_batch for update skip locked));
    get diagnostics v_usage = row_count;

    -- Revoked tokens, once they have been listed as revoked long enough; their usage goes by
    -- ON DELETE CASCADE; an old token's row of token_legacy goes with it.
    with gone as (
        delete from echovalue.tokens t
         where t.ctid = any (array(
             select x.ctid from echovalue.tokens x
              where x.revoked < pg_catalog.now()
                    - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'))
              limit v_batch for update skip locked))
        returning t.hash
    )
    select pg_catalog.array_agg(g.hash) into v_hashes from gone g;
    v_revoked := coalesce(pg_catalog.cardinality(v_hashes), 0);
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

    delete from echovalue.attachments a
     where a.ctid = any (array(
         select x.ctid from echovalue.attachments x
          where x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('attachment_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_attachments = row_count;

    -- Messages whose delivery is finished (delivered or failed for good), older than
    -- echovalue.message_retention_hours; their delivery row and attachments go by ON DELETE
    -- CASCADE. A pending delivery keeps its message however old.
    delete from echovalue.messages m
     where m.id = any (array(
         select x.id from echovalue.messages x
          where x.received_at <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
            and not exists (select 1 from echovalue.deliveries d
                             where d.wallet_id = x.wallet_id and d.message_id = x.id and d.state = 'pending')
          limit v_batch for update skip locked));
    get diagnostics v_messages = row_count;

    -- Runs, tests and alerts (no message) after the same time: finished runs and alerts, and
    -- every test (a test is answered within seconds).
    delete from echovalue.deliveries d
     where d.ctid = any (array(
         select x.ctid from echovalue.deliveries x
          where x.kind <> 'mail' and (x.kind = 'test' or x.state <> 'pending')
            and x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_unmessaged = row_count;

    -- A request may lock its token (recording last_used), then its wallet. Here the wallets
    -- are locked first, so a token a request already holds is only tried with SKIP LOCKED and
    -- its wallet is left for a later run: maintenance never waits for a request, so the two
    -- cannot deadlock.
    v_wallet_ids := array(
        select x.id from echovalue.wallets x
         where x.last_used < pg_catalog.now()
               - pg_catalog.make_interval(days => echovalue._setting('inactive_days'))
         limit v_batch for update skip locked);
    select pg_catalog.array_agg(t.id), pg_catalog.array_agg(t.hash) into v_token_ids, v_hashes
      from (select t.id, t.hash from echovalue.tokens t
             where t.wallet_id = any (v_wallet_ids) for update skip locked) t;
    -- tokens and kv of these wallets go by ON DELETE CASCADE, logs (no foreign key) here
    with gone as (
        delete from echovalue.wallets w
         where w.id = any (v_wallet_ids)
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = w.id
                              and t.id <> all (coalesce(v_token_ids, '{}')))
        returning w.id
    ), gone_logs as (
        delete from echovalue.logs l where l.wallet_id in (select g.id from gone g)
    )
    select pg_catalog.count(*) into v_wallets from gone;
    -- (the old tokens of a wallet kept keep their rows)
    delete from echovalue.token_legacy l
     where l.hash = any (v_hashes)
       and not exists (select 1 from echovalue.wallets w where w.id = l.wallet_id);

    return pg_catalog.jsonb_build_object(
        'kv', v_kv, 'logs', v_logs, 'token_rate', v_rate, 'token_usage', v_usage,
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'runs_and_tests', v_unmessaged,
        'wallets', v_wallets);
end;
$$;

create or replace function echovalue._distributed(p_table text) returns boolean
language plpgsql stable as $$
begin
    return exists (select from pg_catalog.pg_dist_partition p
                    where p.logicalrelid = ('echovalue.' || p_table)::regclass);
end;
$$;

create or replace function echovalue.distribute() returns text
language plpgsql volatile as $$
declare
    v_table text;
    v_done text[] := '{}';
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        raise exception 'echovalue: distribute() needs the citus extension in this database'
            using errcode = 'feature_not_supported',
                  hint = 'CREATE EXTENSION citus on the coordinator, add the workers, then run it again.';
    end if;
    if not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
        raise exception 'echovalue: only a superuser may distribute echovalue'
            using errcode = 'insufficient_privilege';
    end if;

    drop trigger if exists prices_restore on echovalue.prices;
    drop trigger if exists recharge_tiers_restore on echovalue.recharge_tiers;
    drop trigger if exists installation_keys_restore on echovalue.installation_keys;
    foreach v_table in array array['messages_id_idx', 'attachments_id_idx', 'deliveries_id_idx']
    loop
        if (select i.indisunique from pg_catalog.pg_index i
             where i.indexrelid = pg_catalog.to_regclass('echovalue.' || v_table)) then
            execute pg_catalog.format('drop index echovalue.%I', v_table);
            execute pg_catalog.format('create index %I on echovalue.%I (id)', v_table,
                                      pg_catalog.split_part(v_table, '_', 1));
        end if;
    end loop;
    foreach v_table in array array['mailboxes', 'webhooks'] loop
        if exists (select from pg_catalog.pg_constraint c
                    where c.conname = v_table || '_mailbox_key'
                      and c.conrelid = ('echovalue.' || v_table)::regclass) then
            execute pg_catalog.format('alter table echovalue.%I drop constraint %I', v_table,
                                      v_table || '_mailbox_key');
            execute pg_catalog.format('create index %I on echovalue.%I (mailbox)',
                                      v_table || '_mailbox_idx', v_table);
        end if;
    end loop;

    -- (one Citus call per statement: several in one statement deadlock on the metadata sync)
    foreach v_table in array array['prices', 'recharge_tiers', 'installation_keys', 'mail_relay',
                                   'token_legacy', 'token_rate', 'stripe_events'] loop
        if not echovalue._distributed(v_table) then
            perform create_reference_table(('echovalue.' || v_table)::regclass);
            v_done := v_done || v_table;
        end if;
    end loop;
    if not echovalue._distributed('wallets') then
        perform create_distributed_table('echovalue.wallets'::regclass, 'id');
        v_done := v_done || 'wallets'::text;
    end if;
    foreach v_table in array array['tokens', 'token_usage', 'kv', 'logs', 'refusal_log_rate',
                                   'wallet_settings', 'mailboxes', 'webhooks', 'messages',
                                   'attachments', 'deliveries'] loop
        if not echovalue._distributed(v_table) then
            perform create_distributed_table(('echovalue.' || v_table)::regclass, 'wallet_id',
                                             colocate_with => 'echovalue.wallets');
            v_done := v_done || v_table;
        end if;
    end loop;
    return pg_catalog.format('distributed: %s', coalesce(nullif(pg_catalog.array_to_string(v_done, ', '), ''),
                                                          'nothing left to do'));
end;
$$;

create or replace function echovalue._attachment_sig(p_attachment bigint, p_expires bigint) returns text
language plpgsql stable as $$
begin
    return (
    select pg_catalog.encode(echovalue._hmac_sha256(k.key,
               pg_catalog.convert_to(p_attachment::text || '.' || p_expires::text, 'UTF8')), 'hex')
      from echovalue.installation_keys k
     where k.name = 'attachment_url');
end;
$$;

create or replace function echovalue._delivery_payload(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
begin
    return (
    select echovalue._mail_payload(m.external_id, m.received_at, m.from_email, m.from_name, w.hash,
                                   m.subject, m.text_body, m.html_body, m.headers::text,
                                   echovalue._attachments_json(m.wallet_id, m.id))
      from echovalue.messages m
      join echovalue.wallets w on w.id = m.wallet_id
     where m.wallet_id = p_wallet and m.id = p_message);
end;
$$;

create or replace function echovalue._delivery_log(
    p_wallet bigint, p_webhook_id text, p_status int, p_error text, p_kind text default 'mail'
) returns void
language plpgsql volatile as $$
begin
    perform echovalue._log(p_wallet,
                          case when p_kind = 'alert_email' then 'email' else 'webhook-delivery' end,
                          case when p_kind = 'alert_email' then 'SMTP' else 'POST' end,
                          p_webhook_id, p_status, p_error, 0, w.balance)
      from echovalue.wallets w
     where w.id = p_wallet;
end;
$$;

create or replace function echovalue._schedule_run_body(p_hook echovalue.webhooks, p_for timestamptz)
returns text
language plpgsql stable as $$
begin
    return (
    select pg_catalog.format(
        '{"type":"scheduled_webhook_run","webhookId":%s,"scheduledFor":%s,"executedAt":%s,"walletHash":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(echovalue._ts(p_for)),
        echovalue._json_str(echovalue._ts(pg_catalog.now())), echovalue._json_str(w.hash))
      from echovalue.wallets w
     where w.id = p_hook.wallet_id);
end;
$$;

create or replace function echovalue.schedule_next_due() returns timestamptz
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    return (
    select h.next_run_at from echovalue.webhooks h
     where h.next_run_at is not null
     order by h.next_run_at
     limit 1);
end;
$$;

create or replace function echovalue._webhook_sample(p_wallet bigint, p_name text) returns text
language plpgsql volatile as $$
begin
    return (
    select echovalue._mail_payload(
               'test-' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '') || '@' || d.domain,
               pg_catalog.now(), 'test@' || d.domain, 'echovalue', w.hash, 'Test webhook from echovalue',
               pg_catalog.format('This is a test delivery of your webhook %s.', p_name), null, '{}', '[]')
      from echovalue.wallets w,
           (select pg_catalog.lower(echovalue._setting_text('mail_domain')) as domain) d
     where w.id = p_wallet);
end;
$$;

create or replace function echovalue.relay_register(from_address text) returns void
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if relay_register.from_address is null then
        delete from echovalue.mail_relay;
        return;
    end if;
    if echovalue._email_address_error('from_address', relay_register.from_address) is not null then
        raise exception 'echovalue: relay_register needs a From address: %',
            echovalue._email_address_error('from_address', relay_register.from_address)
            using errcode = 'invalid_parameter_value';
    end if;
    insert into echovalue.mail_relay as r (from_address, updated)
    values (relay_register.from_address, pg_catalog.now())
    on conflict (only_row) do update set from_address = excluded.from_address, updated = excluded.updated;
end;
$$;

create or replace function echovalue._alert_low_balance(p_wallet bigint, p_balance bigint, p_threshold bigint)
returns void
language plpgsql volatile as $$
begin
    perform echovalue._alert_queue(p_wallet, pg_catalog.format(
        '{"type":"wallet.low_balance","wallet":%s,"threshold":%s,"token_hash":%s}',
        p_balance, p_threshold, echovalue._json_str(w.hash)))
      from echovalue.wallets w
     where w.id = p_wallet;
end;
$$;

create or replace function echovalue._alert_recharged(p_wallet bigint, p_credits bigint, p_balance bigint)
returns void
language plpgsql volatile as $$
begin
    perform echovalue._alert_queue(p_wallet, pg_catalog.format(
        '{"type":"wallet.recharged","credits":%s,"wallet":%s,"token_hash":%s}',
        p_credits, p_balance, echovalue._json_str(w.hash)))
      from echovalue.wallets w
     where w.id = p_wallet and w.low_balance_threshold > 0;   -- threshold 0: alerts are off
end;
$$;

create or replace function echovalue.settings_put(
    token text,
    body text,
    http_method text default 'PUT',
    http_path text default '/token/settings'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(settings_put.token,
        settings_put.http_method, settings_put.http_path);
    v_error text;
    v_settings jsonb;
    v_hook jsonb;
    v_template text;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    select b.p_error, b.p_config into v_error, v_settings
      from echovalue._webhook_body_parse(settings_put.body) b;
    v_hook := v_settings -> 'low_balance_webhook';
    if v_error is null and pg_catalog.jsonb_typeof(v_hook -> 'template') <> 'null' then
        v_template := (settings_put.body::json -> 'low_balance_webhook' -> 'template')::text;
    end if;
    -- an alert webhook is signed with the wallet's webhook secret, and a custom template
    -- writes any body: setting one takes the webhook scope as well, or a settings-only token
    -- could have mail-like payloads signed for its own URL
    if pg_catalog.jsonb_typeof(v_hook) = 'object' and not echovalue._has_scope(v_caller, 'webhook') then
        return echovalue._fail(v_caller, 'settings_put', 403, 'Forbidden');
    end if;
    v_error := coalesce(v_error, echovalue._settings_error(v_settings, v_template));
    if v_error is not null then
        return echovalue._fail(v_caller, 'settings_put', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'settings_put');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    if pg_catalog.jsonb_typeof(v_hook) <> 'object' then
        v_hook := '{}';
    else
        -- the signing secret of alert deliveries is the wallet's (SPEC §7)
        perform echovalue._mailbox_ensure(v_caller.wallet_id);
    end if;
    update echovalue.wallets w
       set low_balance_threshold = coalesce((v_settings ->> 'low_balance_threshold')::numeric::bigint, 0)
     where w.id = v_caller.wallet_id;
    insert into echovalue.wallet_settings as s
        (wallet_id, url, headers, format, template, options, email, updated)
    values (v_caller.wallet_id, v_hook ->> 'url',
            coalesce(nullif(v_hook -> 'headers', 'null'::jsonb), '{}'),
            coalesce(v_hook ->> 'format', ''), v_template::json,
            coalesce(nullif(v_hook -> 'options', 'null'::jsonb), '{}'),
            v_settings ->> 'low_balance_email', pg_catalog.now())
    -- (excluded.updated, not now(): Citus takes only immutable functions in DO UPDATE SET)
    on conflict (wallet_id) do update
       set url = excluded.url, headers = excluded.headers, format = excluded.format,
           template = excluded.template, options = excluded.options, email = excluded.email,
           updated = excluded.updated;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

CREATE  FUNCTION "_token_generate"(
	"p_wallet" bigint /* i64 */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wallet_token_generate_wrapper';

CREATE  FUNCTION "_token_wallet"(
	"token" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'token_wallet_wrapper';

CREATE  FUNCTION "_wallet_id_new"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wallet_id_new_wrapper';

-- Privileges, as in a fresh install (extension/src/sql/grants.sql).

-- Privileges, last: PUBLIC gets nothing; echovalue_api (a SQL application, and through
-- echovalue_gateway the proxy) may use the schema and execute the API functions only;
-- echovalue_gateway (the proxy) besides records Stripe events it verified and names the
-- client address of a new wallet; echovalue_worker (the mailhook) only the worker functions.
-- None can read or write any table or call an internal `_` helper.

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_api') then
        create role echovalue_api nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_worker') then
        create role echovalue_worker nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_gateway') then
        create role echovalue_gateway nologin;
    end if;
end;
$$;
grant echovalue_api to echovalue_gateway;

revoke all on all tables in schema echovalue from public;
revoke all on all sequences in schema echovalue from public;
revoke all on all functions in schema echovalue from public;
revoke all on schema echovalue from public;

grant usage on schema echovalue to echovalue_api;
grant execute on function
    echovalue.token_format_ok(text),
    echovalue.token_new(inet, text, text),
    echovalue.wallet_get(text, text, text),
    echovalue.recharge_link(text, text, text, text),
    echovalue.logs_get(text, text, text, text, text),
    echovalue.kv_set(text, text, text, text, text, text, text),
    echovalue.kv_get(text, text, text, text, text),
    echovalue.kv_delete(text, text, text, text, text),
    echovalue.kv_list(text, text, text, text, text, text, text),
    echovalue.kv_groups(text, text, text, text, text, text),
    echovalue.request_refuse(text, text, int, text, text, text),
    echovalue.token_key_create(text, text, text, text),
    echovalue.token_key_list(text, text, text),
    echovalue.token_key_revoke(text, text, text, text),
    echovalue.webhook_set(text, text, text, text),
    echovalue.webhook_get(text, text, text),
    echovalue.webhook_delete(text, text, text),
    echovalue.webhook_show(text, text, text, text),
    echovalue.webhook_put(text, text, text, text, text),
    echovalue.webhook_patch(text, text, text, text, text),
    echovalue.webhook_remove(text, text, text, text),
    echovalue.webhook_test(text, text, text, text),
    echovalue.webhook_test_result(text, boolean),
    echovalue.schedule_next(text, text, timestamptz),
    echovalue.schedule_latest(text, text, timestamptz),
    echovalue.attachment_get(text, text, text),
    echovalue.settings_get(text, text, text),
    echovalue.settings_put(text, text, text, text),
    echovalue.maintenance_run()
to echovalue_api;

-- stripe_event_record trusts its caller to have checked the Stripe signature (an application
-- with it could record a paid event and mint credits), and token_new lets only this role name
-- a client address other than its own connection's (or skip the creation rate limit).
revoke execute on function echovalue.stripe_event_record(text, text, text) from echovalue_api;
grant execute on function echovalue.stripe_event_record(text, text, text) to echovalue_gateway;

grant usage on schema echovalue to echovalue_worker;
grant execute on function
    echovalue.mail_rcpt_check(text),
    echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[]),
    echovalue.address_classify(inet),
    echovalue.delivery_addresses_error(inet[]),
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.schedule_claim(int),
    echovalue.schedule_next_due(),
    echovalue.stripe_event_apply(),
    echovalue.relay_register(text),
    echovalue.alert_email_claim(int, int)
to echovalue_worker;
