-- echovalue 0.10.0 -> 0.11.0: scale-out on Citus, third part (issue 14, SPEC section 18).
-- A new mailbox id starts with its wallet's key, as tokens do, so that an inbound address
-- names its wallet's shard: the mailhook passes `wallet => echovalue.recipient_wallet($1)` to
-- mail_rcpt_check and mail_receive. The mailboxes made before keep their addresses:
-- echovalue.mailbox_legacy maps each to its wallet. A test's await value names its wallet
-- too (webhook_test_result takes the `wallet` hint, echovalue.test_wallet). On a distributed
-- install, run echovalue.distribute() again after this update: it makes mailbox_legacy a
-- reference table and delegates the three changed functions.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

create table echovalue.mailbox_legacy (
    mailbox   text primary key,
    wallet_id bigint not null
);
create index mailbox_legacy_wallet_idx on echovalue.mailbox_legacy (wallet_id);
insert into echovalue.mailbox_legacy (mailbox, wallet_id)
select m.mailbox, m.wallet_id from echovalue.mailboxes m
union all
select h.mailbox, h.wallet_id from echovalue.webhooks h where h.mailbox is not null;
select pg_catalog.pg_extension_config_dump('echovalue.mailbox_legacy', '');

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue.mail_rcpt_check(text);
drop function if exists echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[]);
drop function if exists echovalue.webhook_test_result(text, boolean);

-- Functions new or changed in 0.11.0.

create or replace function echovalue._mailbox_ensure(p_wallet bigint) returns echovalue.mailboxes
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

create or replace function echovalue._mailbox_new(p_wallet bigint) returns text
language sql volatile as $$
    select echovalue._wallet_key(p_wallet) || pg_catalog.encode(echovalue._random_bytes(12), 'hex')
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
            case when p_name <> 'default' then echovalue._mailbox_new(p_wallet) end,
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

create or replace function echovalue._mail_route(
    p_recipient text, out o_caller echovalue.caller, out o_webhook echovalue.webhooks,
    out o_code int, out o_message text
)
language plpgsql volatile as $$
declare
    v_addr text := pg_catalog.lower(p_recipient);
    v_local text := pg_catalog.substring(v_addr, '^(.+)@[^@]+$');
    v_domain text := pg_catalog.rtrim(pg_catalog.substring(v_addr, '@([^@]+)$'), '.');
    v_wallet bigint;
    v_key bigint;
    v_name text := 'default';
begin
    if v_local is null or pg_catalog.char_length(v_addr) > 254 then
        o_code := 550;
        o_message := '5.1.3 bad recipient address';
        return;
    end if;
    if v_domain <> pg_catalog.lower(echovalue._setting_text('mail_domain')) then
        o_code := 550;
        o_message := '5.7.1 relaying denied: not a domain of this service';
        return;
    end if;
    -- mail to a token's address is paid by that token, within its limits; to a mailbox
    -- address by the wallet, with no token's limits
    if echovalue.token_format_ok(v_local) then
        o_caller := echovalue._wallet_resolve(v_local, 'SMTP', null);
        v_wallet := o_caller.wallet_id;
    else
        -- the wallet a mailbox names in its key, or, for one made before 0.11.0, the map's;
        -- then the address among that wallet's mailbox and webhooks (on Citus, its shard)
        v_key := coalesce(echovalue.recipient_wallet(v_addr),
                          (select l.wallet_id from echovalue.mailbox_legacy l
                            where l.mailbox = v_local));
        select m.wallet_id into v_wallet from echovalue.mailboxes m
         where m.wallet_id = v_key and m.mailbox = v_local;
        if v_wallet is null then
            select h.wallet_id, h.name into v_wallet, v_name from echovalue.webhooks h
             where h.wallet_id = v_key and h.mailbox = v_local;
        end if;
        o_caller.wallet_id := v_wallet;
        o_caller.method := 'SMTP';
    end if;
    if v_wallet is null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 no such mailbox';
        return;
    end if;
    select * into o_webhook from echovalue.webhooks h where h.wallet_id = v_wallet and h.name = v_name;
    if not found then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 mailbox has no webhook configured';
    elsif o_webhook.cron is not null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 the webhook of this mailbox is scheduled and takes no mail';
    end if;
end;
$$;

create or replace function echovalue.mail_rcpt_check(recipient text, wallet bigint default null)
returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_price bigint;
begin
    select * into v_route from echovalue._mail_route(mail_rcpt_check.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    -- (the price first: on Citus the query of the wallet's row runs whole on its shard)
    v_price := (echovalue._price('email')).credits;
    if not exists (select 1 from echovalue.wallets w
                    where w.id = (v_route.o_caller).wallet_id and w.balance >= v_price) then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;
    -- at RCPT, one more byte must fit
    return coalesce(echovalue._mail_quota_refusal((v_route.o_caller).wallet_id, 1),
                    row(250, '2.1.5 recipient ok')::echovalue.smtp_reply);
end;
$$;

create or replace function echovalue.mail_receive(
    recipient text,
    message_id text,
    from_email text,
    from_name text,
    subject text,
    text_body text,
    html_body text,
    headers jsonb,
    size_bytes int,
    attachment_filenames text[] default '{}',
    attachment_content_types text[] default '{}',
    attachment_contents bytea[] default '{}',
    wallet bigint default null                -- a routing hint, as in mail_rcpt_check
) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_message bigint;
    v_delivery bigint;
    v_full echovalue.smtp_reply;
    v_n int := coalesce(pg_catalog.cardinality(mail_receive.attachment_contents), 0);
begin
    if coalesce(pg_catalog.cardinality(mail_receive.attachment_filenames), 0) <> v_n
       or coalesce(pg_catalog.cardinality(mail_receive.attachment_content_types), 0) <> v_n
       or pg_catalog.array_position(mail_receive.attachment_contents, null) is not null then
        raise exception 'echovalue: mail_receive needs one filename, content type and content per attachment'
            using errcode = 'invalid_parameter_value';
    end if;
    select * into v_route from echovalue._mail_route(mail_receive.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    v_caller := v_route.o_caller;
    v_full := echovalue._mail_quota_refusal(v_caller.wallet_id, greatest(mail_receive.size_bytes, 0));
    if v_full is not null then
        return v_full;
    end if;
    -- logged under the webhook's address, never the token
    v_caller.path := echovalue._webhook_email(v_route.o_webhook);
    v_paid := echovalue._pay(v_caller, 'email');
    if v_paid.balance is null then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;

    insert into echovalue.messages as m
        (wallet_id, external_id, from_email, from_name, subject, text_body, html_body, headers, size_bytes)
    values
        (v_caller.wallet_id, mail_receive.message_id, mail_receive.from_email, mail_receive.from_name,
         mail_receive.subject, mail_receive.text_body, mail_receive.html_body,
         coalesce(mail_receive.headers, '{}'::jsonb), mail_receive.size_bytes)
    returning m.id into v_message;
    insert into echovalue.attachments
        (wallet_id, message_id, position, filename, content_type, size, content)
    select v_caller.wallet_id, v_message, a.pos, a.filename,
           coalesce(a.content_type, 'application/octet-stream'), pg_catalog.octet_length(a.content), a.content
      from unnest(mail_receive.attachment_filenames, mail_receive.attachment_content_types,
                  mail_receive.attachment_contents) with ordinality as a(filename, content_type, content, pos)
     where (v_route.o_webhook).include_attachments;
    insert into echovalue.deliveries as d (wallet_id, message_id, webhook)
    values (v_caller.wallet_id, v_message, (v_route.o_webhook).name)
    returning d.id into v_delivery;
    perform echovalue._finish(v_caller, v_paid, 200, null);
    perform pg_catalog.pg_notify('echovalue_mail', v_delivery::text);
    return row(250, '2.0.0 queued as ' || v_message)::echovalue.smtp_reply;
end;
$$;

create or replace function echovalue.delivery_record(
    delivery_id bigint,
    attempt int,
    outcome text,
    status_code int default null,
    error text default null,
    retry_seconds int default null
) returns boolean
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint;
    v_webhook_id text;
    v_kind text;
    v_error text := pg_catalog.left(delivery_record.error, 500);
    v_changed boolean := false;
    -- (a variable, not now() in the CASE: Citus refuses a non-immutable function there)
    v_retry_at timestamptz := pg_catalog.now()
        + pg_catalog.make_interval(secs => coalesce(delivery_record.retry_seconds, 0));
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    -- The delivery's wallet first (on Citus a read of every shard's id index), then every
    -- statement names it, so it runs on that wallet's shard alone.
    select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
      from echovalue.deliveries d where d.id = delivery_record.delivery_id;
    if not found then
        return false;   -- purged with its wallet or message
    end if;
    -- a test is never retried: its one attempt's retry is its failure
    update echovalue.deliveries d
       set state = case when delivery_record.outcome <> 'retry' then delivery_record.outcome
                        when d.kind = 'test' then 'failed' else 'pending' end,
           next_attempt_at = case when delivery_record.outcome = 'retry' and d.kind <> 'test'
               then v_retry_at else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt);
    v_changed := found;
    if not v_changed then
        null;   -- recorded already (or the lease ran out and another attempt took it)
    elsif v_kind = 'test' then
        perform pg_catalog.pg_notify('echovalue_webhook_test',
            echovalue._test_await(v_wallet, delivery_record.delivery_id, v_webhook_id));
    elsif v_kind = 'scheduled' then
        -- the webhook shows how its latest run went
        update echovalue.webhooks h
           set last_status = case when delivery_record.outcome = 'delivered' then 'success' else 'failure' end,
               last_error = case when delivery_record.outcome = 'delivered' then null
                                 else coalesce(v_error, 'delivery failed') end
          from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
           and h.wallet_id = v_wallet and h.name = d.webhook
           and h.last_run_at <= d.created;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end, v_kind);
    return v_changed;
end;
$$;

create or replace function echovalue.delivery_claim(batch int default 50, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, webhook_id text, url text, url_error text,
               headers jsonb, secret text, payload text)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_row record;
    v_claimed int;
    v_returned int;
    v_format text;
    v_options jsonb;
    v_template text;
    v_gone text;
begin
    if delivery_claim.batch is null or delivery_claim.batch not between 1 and 10000
       or delivery_claim.lease_seconds is null or delivery_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: delivery_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    loop
        v_claimed := 0;
        v_returned := 0;
        for v_row in select * from echovalue._delivery_lease(delivery_claim.batch, delivery_claim.lease_seconds)
        loop
            v_claimed := v_claimed + 1;
            if v_row.kind = 'alert' then
                -- an alert's body is made when it is queued; it goes to the alert webhook
                select s.url, s.headers, mb.secret into url, headers, secret
                  from echovalue.wallet_settings s
                  join echovalue.mailboxes mb on mb.wallet_id = s.wallet_id
                 where s.wallet_id = v_row.wallet_id and s.url is not null;
            else
                select h.url, h.headers, mb.secret, h.format, h.options, h.template::text
                  into url, headers, secret, v_format, v_options, v_template
                  from echovalue.webhooks h
                  join echovalue.mailboxes mb on mb.wallet_id = h.wallet_id
                 where h.wallet_id = v_row.wallet_id and h.name = v_row.webhook;
            end if;
            if not found then
                v_gone := case when v_row.kind = 'alert' then 'no alert webhook configured'
                               else 'no webhook configured' end;
                update echovalue.deliveries d
                   set state = 'failed', last_status = null, last_error = v_gone
                 where d.wallet_id = v_row.wallet_id and d.id = v_row.id;
                perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, v_gone);
                if v_row.kind = 'test' then
                    perform pg_catalog.pg_notify('echovalue_webhook_test',
                        echovalue._test_await(v_row.wallet_id, v_row.id, v_row.webhook_id));
                end if;
                continue;
            end if;
            delivery_id := v_row.id;
            attempt := v_row.attempts;
            url_error := pg_catalog.regexp_replace(echovalue._webhook_url_error(url),
                                                   '^Bad Request: ', '');
            webhook_id := v_row.webhook_id;
            payload := case when v_row.kind = 'mail'
                then echovalue._webhook_body(v_format, v_options, v_template,
                                             echovalue._delivery_payload(v_row.wallet_id, v_row.message_id))
                else v_row.body end;
            v_returned := v_returned + 1;
            return next;
        end loop;
        exit when v_claimed = 0 or v_returned > 0;
    end loop;
end;
$$;

create or replace function echovalue._test_await(p_wallet bigint, p_id bigint, p_webhook_id text) returns text
language sql immutable as $$
    select p_wallet || ':' || p_id || ':' || p_webhook_id
$$;

create or replace function echovalue.test_wallet(test text) returns bigint
language sql immutable strict as $$
    select (pg_catalog.regexp_match(test, '^([0-9]{1,18}):[0-9]{1,18}:msg_'))[1]::bigint
$$;

create or replace function echovalue.webhook_test(
    token text,
    webhook_id text,
    http_method text default 'POST',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_test.token, webhook_test.http_method,
        coalesce(webhook_test.http_path, '/webhook/' || webhook_test.webhook_id || '/test'));
    v_paid echovalue.payment;
    v_hook echovalue.webhooks;
    v_id bigint;
    v_webhook_id text;
    v_out echovalue.outcome;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_test');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = v_caller.wallet_id and h.name = webhook_test.webhook_id;
    if not found then
        return echovalue._finish(v_caller, v_paid, 404, 'Webhook Not Found');
    end if;
    insert into echovalue.deliveries as d (wallet_id, webhook, kind, body)
    values (v_caller.wallet_id, v_hook.name, 'test',
            case when v_hook.cron is not null
                 then echovalue._schedule_run_body(v_hook, pg_catalog.now())
                 else echovalue._webhook_body(v_hook.format, v_hook.options, v_hook.template::text,
                          echovalue._webhook_sample(v_caller.wallet_id, v_hook.name)) end)
    returning d.id, d.webhook_id into v_id, v_webhook_id;
    perform pg_catalog.pg_notify('echovalue_mail', v_id::text);
    v_out := echovalue._finish(v_caller, v_paid, 200, '{"success":null,"message":"test webhook queued"}',
                               'application/json');
    v_out.headers := coalesce(v_out.headers, '{}'::jsonb) || pg_catalog.jsonb_build_object(
        'x-echovalue-await', echovalue._test_await(v_caller.wallet_id, v_id, v_webhook_id));
    return v_out;
end;
$$;

create or replace function echovalue.webhook_test_result(
    test text, final boolean default false, wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_m text[] := pg_catalog.regexp_match(webhook_test_result.test,
                                          '^(?:([0-9]{1,18}):)?([1-9][0-9]{0,17}):(msg_[0-9a-f]{32})$');
    v_row echovalue.deliveries;
    v_why text;
    v_wallet bigint := v_m[1]::bigint;
begin
    if v_m is null then
        raise exception 'echovalue: webhook_test_result needs the x-echovalue-await value of a test'
            using errcode = 'invalid_parameter_value';
    end if;
    v_m := v_m[2:3];
    if v_wallet is null then
        -- (on Citus a read of every shard's id index; a FOR UPDATE must name the shard)
        select d.wallet_id into v_wallet from echovalue.deliveries d
         where d.id = v_m[1]::bigint and d.webhook_id = v_m[2] and d.kind = 'test';
    end if;
    if webhook_test_result.final then
        -- locked: no record changes it while this ends it (its claim window is over)
        select * into v_row from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = v_m[1]::bigint and d.webhook_id = v_m[2]
           and d.kind = 'test'
           for update;
    else
        -- not locked: a claim (SKIP LOCKED) that came now would pass the test by, and the
        -- NOTIFY that woke its worker is spent
        select * into v_row from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = v_m[1]::bigint and d.webhook_id = v_m[2]
           and d.kind = 'test';
    end if;
    if not found then
        v_why := 'the test is gone';
    elsif v_row.state = 'pending' and not webhook_test_result.final then
        return null;
    elsif v_row.state = 'pending' then
        v_why := case when v_row.attempts = 0 then 'no worker took the test in time'
                      else 'the call did not finish in time' end;
        update echovalue.deliveries d set state = 'failed', last_error = v_why
         where d.wallet_id = v_row.wallet_id and d.id = v_row.id and d.state = 'pending';
        if v_row.attempts = 0 then
            perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, v_why);
        end if;
    elsif v_row.state = 'delivered' then
        return echovalue._outcome(200, '{"success":true,"message":"test webhook delivered"}', null, null,
                                  'application/json');
    else
        v_why := coalesce(v_row.last_error, 'HTTP ' || v_row.last_status, 'delivery failed');
    end if;
    return echovalue._outcome(200,
        pg_catalog.format('{"success":false,"message":%s}', echovalue._json_str('webhook call failed: ' || v_why)),
        null, null, 'application/json');
end;
$$;

create or replace function echovalue.maintenance_run() returns jsonb
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_batch int := echovalue._setting('maintenance_batch');
    v_now timestamptz := pg_catalog.now();
    v_retention timestamptz := v_now
        - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'));
    v_cutoff timestamptz;
    v_rate bigint;
    v_revoked bigint := 0;
    v_wallets bigint := 0;
    v_wallet bigint;
    v_token_ids bigint[];
    v_hashes bytea[] := '{}';
    v_purged bigint[] := '{}';
    v_gone bytea[];
    v_result jsonb;
begin
    v_result := pg_catalog.jsonb_build_object(
        'kv', echovalue._purge('kv', 'x.expires_at <= $1', v_now, v_batch),
        'logs', echovalue._purge('logs', 'x.expires_at <= $1', v_now, v_batch));

    -- (a reference table on Citus, a copy per node: deleted by its key, never by ctid)
    delete from echovalue.token_rate r
     where r.client = any (array(
         select x.client from echovalue.token_rate x
          where x.last_at <= v_now - pg_catalog.make_interval(secs => echovalue._setting('token_rate_seconds'))
          limit v_batch for update skip locked));
    get diagnostics v_rate = row_count;

    -- Usage buckets older than the longest window (30 days, plus the hour it starts in).
    v_result := v_result || pg_catalog.jsonb_build_object('token_rate', v_rate,
        'token_usage', echovalue._purge('token_usage', 'x.hour < $1',
                                        pg_catalog.date_trunc('hour', v_now - interval '30 days', 'UTC'),
                                        v_batch));

    -- Revoked tokens, once they have been listed as revoked long enough; their usage goes by
    -- ON DELETE CASCADE; an old token's row of token_legacy goes with it. (Wallet by wallet,
    -- as in _purge.)
    v_cutoff := v_now - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'));
    for v_wallet in
        select distinct x.wallet_id
          from (select x.wallet_id from echovalue.tokens x where x.revoked < v_cutoff limit v_batch) x
    loop
        with gone as (
            delete from echovalue.tokens t
             where t.wallet_id = v_wallet and t.ctid = any (array(
                 select x.ctid from echovalue.tokens x
                  where x.wallet_id = v_wallet and x.revoked < v_cutoff
                  limit v_batch - v_revoked for update skip locked))
            returning t.hash
        )
        select pg_catalog.array_agg(g.hash) into v_gone from gone g;
        v_revoked := v_revoked + coalesce(pg_catalog.cardinality(v_gone), 0);
        v_hashes := v_hashes || v_gone;
        exit when v_revoked >= v_batch;
    end loop;
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

    v_result := v_result || pg_catalog.jsonb_build_object('revoked_tokens', v_revoked,
        'attachments', echovalue._purge('attachments', 'x.created <= $1',
            v_now - pg_catalog.make_interval(hours => echovalue._setting('attachment_retention_hours')),
            v_batch),
        -- Messages whose delivery is finished (delivered or failed for good), older than
        -- echovalue.message_retention_hours; their delivery row and attachments go by ON
        -- DELETE CASCADE. A pending delivery keeps its message however old.
        'messages', echovalue._purge('messages',
            'x.received_at <= $1 and not exists (select 1 from echovalue.deliveries d'
            ' where d.wallet_id = x.wallet_id and d.message_id = x.id and d.state = ''pending'')',
            v_retention, v_batch),
        -- Runs, tests and alerts (no message) after the same time: finished runs and alerts,
        -- and every test (a test is answered within seconds).
        'runs_and_tests', echovalue._purge('deliveries',
            'x.kind <> ''mail'' and (x.kind = ''test'' or x.state <> ''pending'') and x.created <= $1',
            v_retention, v_batch));

    -- Wallets unused for echovalue.inactive_days, one by one. A request may lock its token
    -- (recording last_used), then its wallet. Here the wallet is locked first, so a token a
    -- request already holds is only tried with SKIP LOCKED and its wallet is left for a later
    -- run: maintenance never waits for a request, so the two cannot deadlock.
    v_cutoff := v_now - pg_catalog.make_interval(days => echovalue._setting('inactive_days'));
    v_hashes := '{}';
    for v_wallet in
        select x.id from echovalue.wallets x where x.last_used < v_cutoff limit v_batch
    loop
        perform from echovalue.wallets w where w.id = v_wallet and w.last_used < v_cutoff
            for update skip locked;
        continue when not found;
        select pg_catalog.array_agg(t.id), pg_catalog.array_agg(t.hash) into v_token_ids, v_gone
          from (select t.id, t.hash from echovalue.tokens t
                 where t.wallet_id = v_wallet for update skip locked) t;
        -- tokens and kv of the wallet go by ON DELETE CASCADE, logs (no foreign key) here
        delete from echovalue.wallets w
         where w.id = v_wallet
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = v_wallet
                              and t.id <> all (coalesce(v_token_ids, '{}')));
        continue when not found;
        delete from echovalue.logs l where l.wallet_id = v_wallet;
        v_wallets := v_wallets + 1;
        v_hashes := v_hashes || v_gone;
        v_purged := v_purged || v_wallet;
    end loop;
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);
    -- (reference tables on Citus: one statement each, after the loop)
    delete from echovalue.mailbox_legacy l where l.wallet_id = any (v_purged);

    return v_result || pg_catalog.jsonb_build_object('wallets', v_wallets);
end;
$$;

create or replace function echovalue.group_commit() returns boolean
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    return not exists (select from pg_catalog.pg_extension e where e.extname = 'citus')
        or not echovalue._distributed('wallets');
end;
$$;

create or replace function echovalue.distribute() returns text
language plpgsql volatile as $$
declare
    v_table text;
    v_function regprocedure;
    v_done text[] := '{}';
    v_functions int := 0;
    v_failed text;
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
                                   'token_legacy', 'mailbox_legacy', 'token_rate',
                                   'stripe_events'] loop
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
    for v_function in
        select p.oid::regprocedure from pg_catalog.pg_proc p
         where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
           and 'wallet' = any (p.proargnames)
         order by p.proname
    loop
        if not exists (select from pg_catalog.pg_dist_object o
                        where o.classid = 'pg_catalog.pg_proc'::regclass and o.objid = v_function
                          and o.distribution_argument_index is not null) then
            perform create_distributed_function(v_function, 'wallet',
                                                colocate_with => 'echovalue.wallets');
            v_functions := v_functions + 1;
        end if;
    end loop;
    -- (on every node, those added since included; "distribute() again" after adding one)
    select pg_catalog.string_agg(r.nodename || ':' || r.nodeport || ' ' || r.result, '; ')
      into v_failed
      from run_command_on_workers('select echovalue._node_sequences()') r where not r.success;
    if v_failed is not null then
        raise exception 'echovalue: could not give every worker its own range of ids: %', v_failed;
    end if;
    if v_functions > 0 then
        v_done := v_done || pg_catalog.format('%s API functions', v_functions);
    end if;
    return pg_catalog.format('distributed: %s', coalesce(nullif(pg_catalog.array_to_string(v_done, ', '), ''),
                                                          'nothing left to do'));
end;
$$;

CREATE  FUNCTION "_wallet_key"(
	"p_wallet" bigint /* i64 */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wallet_key_text_wrapper';

CREATE  FUNCTION "recipient_wallet"(
	"recipient" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'recipient_wallet_wrapper';

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
    echovalue.token_wallet(text),
    echovalue.group_commit(),
    echovalue.token_new(inet, text, text),
    echovalue.wallet_get(text, text, text, bigint),
    echovalue.recharge_link(text, text, text, text, bigint),
    echovalue.logs_get(text, text, text, text, text, bigint),
    echovalue.kv_set(text, text, text, text, text, text, text, bigint),
    echovalue.kv_get(text, text, text, text, text, bigint),
    echovalue.kv_delete(text, text, text, text, text, bigint),
    echovalue.kv_list(text, text, text, text, text, text, text, bigint),
    echovalue.kv_groups(text, text, text, text, text, text, bigint),
    echovalue.request_refuse(text, text, int, text, text, text, bigint),
    echovalue.token_key_create(text, text, text, text, bigint),
    echovalue.token_key_list(text, text, text, bigint),
    echovalue.token_key_revoke(text, text, text, text, bigint),
    echovalue.webhook_set(text, text, text, text, bigint),
    echovalue.webhook_get(text, text, text, bigint),
    echovalue.webhook_delete(text, text, text, bigint),
    echovalue.webhook_show(text, text, text, text, bigint),
    echovalue.webhook_put(text, text, text, text, text, bigint),
    echovalue.webhook_patch(text, text, text, text, text, bigint),
    echovalue.webhook_remove(text, text, text, text, bigint),
    echovalue.webhook_test(text, text, text, text, bigint),
    echovalue.webhook_test_result(text, boolean, bigint),
    echovalue.test_wallet(text),
    echovalue.schedule_next(text, text, timestamptz),
    echovalue.schedule_latest(text, text, timestamptz),
    echovalue.attachment_get(text, text, text),
    echovalue.settings_get(text, text, text, bigint),
    echovalue.settings_put(text, text, text, text, bigint),
    echovalue.maintenance_run()
to echovalue_api;

-- stripe_event_record trusts its caller to have checked the Stripe signature (an application
-- with it could record a paid event and mint credits), and token_new lets only this role name
-- a client address other than its own connection's (or skip the creation rate limit).
revoke execute on function echovalue.stripe_event_record(text, text, text) from echovalue_api;
grant execute on function echovalue.stripe_event_record(text, text, text) to echovalue_gateway;
-- the nodes whose NOTIFYs the proxy listens for too (distribute.sql; the mailhook's below)
grant execute on function echovalue.listen_nodes() to echovalue_gateway;

grant usage on schema echovalue to echovalue_worker;
grant execute on function
    echovalue.recipient_wallet(text),
    echovalue.mail_rcpt_check(text, bigint),
    echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[],
                           bigint),
    echovalue.address_classify(inet),
    echovalue.delivery_addresses_error(inet[]),
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.schedule_claim(int),
    echovalue.schedule_next_due(),
    echovalue.stripe_event_apply(),
    echovalue.relay_register(text),
    echovalue.alert_email_claim(int, int),
    echovalue.listen_nodes()
to echovalue_worker;
