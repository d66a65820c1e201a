-- echovalue 0.5.0 -> 0.6.0: token scopes and KV groups (SPEC §15), wallet settings and alerts
-- (SPEC §14). Tokens made before keep what they could do, except webhook configuration and
-- the webhook secret, which become the root token's: they get the default scopes (kv:read,
-- kv:write, logs, wallet) and every group.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

create function echovalue._scope_names() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet,webhook,settings}'::text[]
$$;

alter table echovalue.tokens add column scopes text[], add column groups text[];
update echovalue.tokens set scopes = '{kv:read,kv:write,logs,wallet}' where not is_root;
alter table echovalue.tokens add constraint tokens_scopes_check
    check ((scopes is null) = is_root and (groups is null or not is_root)
           and scopes <@ echovalue._scope_names() and pg_catalog.array_position(groups, null) is null);

alter table echovalue.prices
    add column scope text check (scope = any (echovalue._scope_names()));
update echovalue.prices p set scope = s.scope
  from (values ('wallet_get', 'wallet'), ('recharge_link', 'wallet'), ('kv_set', 'kv:write'),
               ('kv_get', 'kv:read'), ('kv_delete', 'kv:write'), ('webhook_set', 'webhook'),
               ('webhook_get', 'webhook'), ('webhook_delete', 'webhook'),
               ('webhook_show', 'webhook'), ('webhook_put', 'webhook'),
               ('webhook_patch', 'webhook'), ('webhook_remove', 'webhook'),
               ('webhook_test', 'webhook'), ('logs_entry', 'logs')) as s(operation, scope)
 where p.operation = s.operation;
insert into echovalue.prices (operation, credits, endpoint, scope) values
    ('settings_get', 1, 'settings', 'settings'), ('settings_put', 1, 'settings', 'settings');

alter type echovalue.caller add attribute scopes text[], add attribute groups text[];

-- The gateway role (the proxy): only it may record Stripe events and name a client address
-- (grants.sql). Every role in echovalue_api before this could do both, so each becomes a
-- gateway member and nothing running breaks; a role that only runs SQL applications should
-- then be `revoke echovalue_gateway from …` (README).
do $$
declare
    v_role text;
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_gateway') then
        create role echovalue_gateway nologin;
    end if;
    for v_role in select r.rolname from pg_catalog.pg_auth_members m
                    join pg_catalog.pg_roles r on r.oid = m.member
                   where m.roleid = 'echovalue_api'::regrole and r.rolname <> 'echovalue_gateway' loop
        execute pg_catalog.format('grant echovalue_gateway to %I', v_role);
    end loop;
end;
$$;

-- Refusals that charged nothing are logged at a bounded rate per wallet.
create table echovalue.refusal_log_rate (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    minute    timestamptz not null,
    entries   int not null
);

-- Settings and alerts: the threshold beside the balance, the rest in wallet_settings; alerts
-- are deliveries without a webhook name.
alter table echovalue.wallets add column low_balance_threshold bigint not null default 0;

create table echovalue.wallet_settings (
    wallet_id bigint primary key references echovalue.wallets (id) on delete cascade,
    url       text,
    headers   jsonb not null default '{}'::jsonb,
    format    text not null default ''
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    template  json,
    options   jsonb not null default '{}'::jsonb,
    email     text check (pg_catalog.char_length(email) <= 254),
    updated   timestamptz not null default now(),
    constraint wallet_settings_template_check check ((format = 'custom') = (template is not null)),
    constraint wallet_settings_url_check check (url is not null or (format = '' and headers = '{}'::jsonb
                                                                    and options = '{}'::jsonb))
);
select pg_catalog.pg_extension_config_dump('echovalue.wallet_settings', '');

create table echovalue.mail_relay (
    only_row     boolean primary key default true check (only_row),
    from_address text not null,
    updated      timestamptz not null default now()
);

alter table echovalue.deliveries
    alter column webhook drop not null,
    drop constraint deliveries_kind_check,
    add constraint deliveries_kind_check check ((
        (kind = 'mail' and message_id is not null and body is null and scheduled_for is null)
        or (kind = 'scheduled' and message_id is null and body is not null and scheduled_for is not null)
        or (kind = 'test' and message_id is null and body is not null and scheduled_for is null)
        or (kind in ('alert', 'alert_email') and message_id is null and body is not null
            and scheduled_for is null))
        and (webhook is null) = (kind in ('alert', 'alert_email')));
drop index echovalue.deliveries_due_idx;
create index deliveries_due_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind not in ('test', 'alert_email');
create index deliveries_email_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind = 'alert_email';

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue._pay(echovalue.caller, text, int);
drop function if exists echovalue._fail(echovalue.caller, text, int, text, int);
drop function if exists echovalue._delivery_log(bigint, text, int, text);
drop function if exists echovalue._delivery_lease(int, int);

-- Functions new or changed in 0.6.0.

create or replace function echovalue._scope_names() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet,webhook,settings}'::text[]
$$;

create or replace function echovalue._scope_defaults() returns text[]
language sql immutable parallel safe as $$
    select '{kv:read,kv:write,logs,wallet}'::text[]
$$;

create or replace function echovalue._wallet_resolve(p_token text, p_method text, p_path text)
returns echovalue.caller
language plpgsql volatile as $$
declare
    v_caller echovalue.caller;
    v_stale boolean;
    v_hash bytea;
begin
    -- Few statements and expressions: each costs a set-up in every transaction, and this runs
    -- on every request. A malformed token gets a NULL hash, which matches no token; the hash
    -- is computed once here, not per row if the planner ever scans.
    v_hash := echovalue._token_hash(p_token);
    select t.wallet_id, t.id, t.is_root, t.limit_per_request, t.limit_daily, t.limit_monthly,
           p_method, p_path, t.scopes, t.groups,
           t.last_used is null or t.last_used < pg_catalog.now() - interval '1 minute'
      into v_caller.wallet_id, v_caller.token_id, v_caller.is_root, v_caller.limit_per_request,
           v_caller.limit_daily, v_caller.limit_monthly, v_caller.method, v_caller.path,
           v_caller.scopes, v_caller.groups, v_stale
      from echovalue.tokens t
     where t.hash = v_hash and t.revoked is null;
    if v_stale then
        -- SKIP LOCKED: a concurrent request of this token is already recording its use
        update echovalue.tokens t set last_used = pg_catalog.now()
         where t.id = (select x.id from echovalue.tokens x where x.id = v_caller.token_id
                          for update skip locked);
    end if;
    return v_caller;
end;
$$;

create or replace function echovalue._refusal_log_allowed(p_wallet bigint) returns boolean
language sql volatile as $$
    insert into echovalue.refusal_log_rate as r (wallet_id, minute, entries)
    values (p_wallet, pg_catalog.date_trunc('minute', pg_catalog.now()), 1)
    on conflict (wallet_id) do update
       set minute = excluded.minute,
           entries = case when r.minute = excluded.minute then r.entries + 1 else 1 end
    returning entries <= echovalue._setting('refusal_logs_per_minute')
$$;

create or replace function echovalue._log(
    p_wallet bigint, p_endpoint text, p_method text, p_path text,
    p_status int, p_error text, p_cost int, p_balance bigint
) returns void
language plpgsql volatile as $$
begin
    insert into echovalue.logs
        (wallet_id, expires_at, method, path, endpoint, status_code, error, cost, balance)
    values
        (p_wallet,
         pg_catalog.now() + pg_catalog.make_interval(days => echovalue._setting('log_retention_days')),
         p_method, pg_catalog.left(p_path, echovalue._setting('log_max_path_chars')), p_endpoint,
         p_status, pg_catalog.left(p_error, 500), p_cost, p_balance);
end;
$$;

create or replace function echovalue._insufficient(
    p_caller echovalue.caller, p_endpoint text, p_limit_refusal text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_balance bigint;
begin
    update echovalue.wallets w set last_used = echovalue._last_used(w.last_used)
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
           set balance = w.balance - v_cost, last_used = echovalue._last_used(w.last_used)
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

create or replace function echovalue._unlogged_or_finish(
    p_caller echovalue.caller, p_paid echovalue.payment, p_status int, p_error text
) returns echovalue.outcome
language plpgsql volatile as $$
begin
    if p_paid.cost = 0 and not echovalue._refusal_log_allowed(p_caller.wallet_id) then
        return echovalue._outcome(p_status, p_error, 0, p_paid.balance,
                                  p_headers => echovalue._limit_headers(p_caller));
    end if;
    return echovalue._finish(p_caller, p_paid, p_status, p_error);
end;
$$;

create or replace function echovalue._fail(
    p_caller echovalue.caller, p_operation text, p_status int, p_error text,
    p_units int default 1, p_group text default null
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_paid echovalue.payment := echovalue._pay(p_caller, p_operation, p_units, p_group);
begin
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    return echovalue._unlogged_or_finish(p_caller, v_paid, p_status, p_error);
end;
$$;

create or replace function echovalue._has_scope(p_caller echovalue.caller, p_scope text) returns boolean
language sql immutable as $$
    select coalesce(p_caller.is_root, false) or coalesce(p_scope = any (p_caller.scopes), false)
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
    insert into echovalue.token_rate as r (client, last_at)
    values (v_client, pg_catalog.now())
    on conflict (client) do update set last_at = excluded.last_at
        where r.last_at <= pg_catalog.now() - pg_catalog.make_interval(secs => v_rate)
    returning true into v_allowed;
    if v_allowed is null then
        select r.last_at into v_last from echovalue.token_rate r where r.client = v_client;
        return echovalue._outcome(429, 'Too Many Requests', null, null,
            p_headers => pg_catalog.jsonb_build_object('retry-after', greatest(1, pg_catalog.ceil(
                v_rate - extract(epoch from pg_catalog.now() - v_last)))::bigint::text));
    end if;

    v_token := echovalue._token_generate();
    insert into echovalue.wallets (balance, hash)
    values (v_start - v_cost, pg_catalog.encode(echovalue._token_hash(v_token), 'hex'))
    returning id into v_caller.wallet_id;
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

create or replace function echovalue._key_scopes_json(p_token echovalue.tokens) returns text
language sql immutable as $$
    select pg_catalog.format('"scopes":%s,"groups":%s',
        pg_catalog.to_json(coalesce(p_token.scopes, echovalue._scope_names())),
        coalesce(pg_catalog.to_json(p_token.groups)::text, 'null'))
$$;

create or replace function echovalue._key_json(p_token echovalue.tokens) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"id":%s,"label":%s,"prefix":%s,"root":%s,"limits":%s,%s,"usage":%s,"created":%s,"last_used":%s,"revoked":%s}',
        echovalue._json_str(p_token.public_id::text), echovalue._json_str(p_token.label),
        echovalue._json_str(p_token.prefix), pg_catalog.to_json(p_token.is_root),
        echovalue._key_limits_json(p_token), echovalue._key_scopes_json(p_token),
        case when p_token.is_root then 'null' else pg_catalog.format('{"daily":%s,"monthly":%s}',
            echovalue._token_usage(p_token.wallet_id, p_token.id, interval '24 hours'),
            echovalue._token_usage(p_token.wallet_id, p_token.id, interval '30 days')) end,
        echovalue._json_str(echovalue._ts(p_token.created)),
        echovalue._json_str(echovalue._ts(p_token.last_used)),
        echovalue._json_str(echovalue._ts(p_token.revoked)))
$$;

create or replace function echovalue._key_scopes_error(p_scopes jsonb) returns text
language plpgsql immutable as $$
declare
    v_scope jsonb;
begin
    if p_scopes is null or pg_catalog.jsonb_typeof(p_scopes) = 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(p_scopes) <> 'array'
       or pg_catalog.jsonb_array_length(p_scopes) not between 1 and 6 then
        return 'Bad Request: scopes must be a list of 1 to 6 scopes';
    end if;
    for v_scope in select pg_catalog.jsonb_array_elements(p_scopes) loop
        if pg_catalog.jsonb_typeof(v_scope) <> 'string'
           or not (v_scope #>> '{}') = any (echovalue._scope_names()) then
            return pg_catalog.format('Bad Request: unknown scope %s (allowed: %s)',
                pg_catalog.left(v_scope::text, 40),
                pg_catalog.array_to_string(echovalue._scope_names(), ', '));
        end if;
    end loop;
    return null;
end;
$$;

create or replace function echovalue._key_groups_error(p_groups jsonb) returns text
language plpgsql immutable as $$
declare
    v_group jsonb;
    v_n int;
begin
    if p_groups is null or pg_catalog.jsonb_typeof(p_groups) = 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(p_groups) <> 'array'
       or pg_catalog.jsonb_array_length(p_groups) not between 1 and 50 then
        return 'Bad Request: groups must be a list of 1 to 50 KV groups (leave it out for all groups)';
    end if;
    for v_group, v_n in select e.value, e.n
                          from pg_catalog.jsonb_array_elements(p_groups) with ordinality e(value, n) loop
        if pg_catalog.jsonb_typeof(v_group) <> 'string' then
            return pg_catalog.format('Bad Request: groups[%s] must be a string', v_n - 1);
        end if;
        if echovalue._name_error('group', v_group #>> '{}') is not null then
            return pg_catalog.format('Bad Request: groups[%s]: %s', v_n - 1, pg_catalog.regexp_replace(
                echovalue._name_error('group', v_group #>> '{}'), '^Bad Request: ', ''));
        end if;
    end loop;
    return null;
end;
$$;

create or replace function echovalue._key_list(p_list jsonb, p_order text[] default null) returns text[]
language sql immutable as $$
    select case when pg_catalog.jsonb_typeof(p_list) = 'array' then array(
        select e.value from pg_catalog.jsonb_array_elements_text(p_list) with ordinality e(value, n)
         group by e.value
         order by pg_catalog.min(coalesce(pg_catalog.array_position(p_order, e.value)::bigint, e.n)))
    end
$$;

create or replace function echovalue._key_spec_error(p_spec jsonb) returns text
language plpgsql immutable as $$
declare
    v_field text;
    v_error text;
    v_label jsonb := p_spec -> 'label';
    v_limits jsonb := p_spec -> 'limits';
begin
    if pg_catalog.jsonb_typeof(p_spec) <> 'object' then
        return 'Bad Request: body must be a JSON object';
    end if;
    for v_field in select pg_catalog.jsonb_object_keys(p_spec) loop
        if v_field not in ('label', 'limits', 'scopes', 'groups') then
            return pg_catalog.format('Bad Request: unknown field %s (allowed: label, limits, scopes, groups)',
                                     pg_catalog.to_json(pg_catalog.left(v_field, 40)));
        end if;
    end loop;
    if v_label is not null and pg_catalog.jsonb_typeof(v_label) <> 'null' then
        if pg_catalog.jsonb_typeof(v_label) <> 'string'
           or pg_catalog.char_length(v_label #>> '{}') > 100
           or (v_label #>> '{}') ~ '[\u0001-\u001f\u007f-\u009f]' then
            return 'Bad Request: label must be a string of at most 100 characters without control characters';
        end if;
    end if;
    v_error := coalesce(echovalue._key_scopes_error(p_spec -> 'scopes'),
                        echovalue._key_groups_error(p_spec -> 'groups'));
    if v_error is not null or v_limits is null or pg_catalog.jsonb_typeof(v_limits) = 'null' then
        return v_error;
    end if;
    if pg_catalog.jsonb_typeof(v_limits) <> 'object' then
        return 'Bad Request: limits must be a JSON object';
    end if;
    for v_field in select pg_catalog.jsonb_object_keys(v_limits) loop
        if v_field not in ('per_request', 'daily', 'monthly') then
            return pg_catalog.format(
                'Bad Request: unknown limit %s (allowed: per_request, daily, monthly)',
                pg_catalog.to_json(pg_catalog.left(v_field, 40)));
        end if;
    end loop;
    return coalesce(echovalue._key_limit_error('per_request', v_limits -> 'per_request'),
                    echovalue._key_limit_error('daily', v_limits -> 'daily'),
                    echovalue._key_limit_error('monthly', v_limits -> 'monthly'));
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
        v_spec := coalesce(nullif(pg_catalog.btrim(token_key_create.spec), ''), '{}')::jsonb;
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
    v_new := echovalue._token_generate();
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

create or replace function echovalue.kv_set(
    token text,
    grp text,
    key text,
    value text,
    ttl text default null,
    http_method text default 'POST',
    http_path text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(kv_set.token, kv_set.http_method,
        coalesce(kv_set.http_path, '/kv/' || kv_set.grp || '/' || kv_set.key));
    v_error text;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_error := echovalue._kv_set_error(kv_set.grp, kv_set.key, kv_set.value, kv_set.ttl);
    if v_error is not null then
        return echovalue._fail(v_caller, 'kv_set', 400, v_error, p_group => kv_set.grp);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_set', p_group => kv_set.grp);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    insert into echovalue.kv as k (wallet_id, grp, key, value, expires_at)
    values (v_caller.wallet_id, kv_set.grp, kv_set.key, kv_set.value,
            pg_catalog.now() + pg_catalog.make_interval(secs => echovalue._ttl_seconds(kv_set.ttl)))
    on conflict on constraint kv_pkey
    do update set value = excluded.value, expires_at = excluded.expires_at;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue.kv_get(
    token text,
    grp text,
    key text,
    http_method text default 'GET',
    http_path text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(kv_get.token, kv_get.http_method,
        coalesce(kv_get.http_path, '/kv/' || kv_get.grp || '/' || kv_get.key));
    v_error text;
    v_paid echovalue.payment;
    v_value text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_error := coalesce(echovalue._name_error('group', kv_get.grp), echovalue._name_error('key', kv_get.key));
    if v_error is not null then
        return echovalue._fail(v_caller, 'kv_get', 400, v_error, p_group => kv_get.grp);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_get', p_group => kv_get.grp);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select k.value into v_value
      from echovalue.kv k
     where k.wallet_id = v_caller.wallet_id and k.grp = kv_get.grp and k.key = kv_get.key
       and k.expires_at > pg_catalog.now();
    if not found then
        return echovalue._finish(v_caller, v_paid, 404, 'Key Not Found');
    end if;
    return echovalue._finish(v_caller, v_paid, 200, v_value);
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
    returning k.expires_at > pg_catalog.now() into v_live;
    if v_live is not true then
        return echovalue._finish(v_caller, v_paid, 404, 'Key Not Found');
    end if;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue._refusal_operation(p_route text, p_method text) returns text
language sql immutable as $$
    select case
        when p_route in ('/kv/{group}/{key}', '/{group}/{key}') then
            case p_method when 'POST' then 'kv_set' when 'DELETE' then 'kv_delete' else 'kv_get' end
        when p_route = '/webhook' then
            case p_method when 'POST' then 'webhook_set' when 'DELETE' then 'webhook_delete'
                          else 'webhook_get' end
        when p_route = '/webhook/{webhookId}' then
            case p_method when 'PUT' then 'webhook_put' when 'PATCH' then 'webhook_patch'
                          when 'DELETE' then 'webhook_remove' else 'webhook_show' end
        when p_route = '/webhook/{webhookId}/test' then 'webhook_test'
        when p_route = '/token/keys' then
            case p_method when 'POST' then 'token_key_create' else 'token_key_list' end
        when p_route = '/token/keys/{id}' then 'token_key_revoke'
        when p_route = '/token/settings' then
            case p_method when 'PUT' then 'settings_put' else 'settings_get' end
        when p_route = '/recharge' then 'recharge_link'
        when p_route in ('/token', '/') and p_method = 'POST' then 'token_new'
        when p_route in ('/token/logs', '/logs') and p_method = 'GET' then 'logs_entry'
        when p_route in ('/token', '/token/logs', '/', '/logs') then 'wallet_get'
    end
$$;

create or replace function echovalue._stripe_event_credit(
    p_event echovalue.stripe_events,
    out state text, out detail text, out wallet_id bigint, out credits bigint
)
language plpgsql volatile as $$
declare
    v_balance bigint;
    v_other text;
begin
    if p_event.type not in ('checkout.session.completed', 'checkout.session.async_payment_succeeded') then
        state := 'ignored';
        detail := 'event type ' || p_event.type || ' grants no credits';
        return;
    end if;
    if p_event.payment_status is distinct from 'paid' then
        state := 'unpaid';
        detail := 'payment_status is ' || coalesce(p_event.payment_status, 'missing');
        return;
    end if;
    select t.credits into credits
      from echovalue.recharge_tiers t where t.stripe_link_id = p_event.payment_link;
    if credits is null then
        state := 'unknown_tier';
        detail := 'no recharge tier has stripe_link_id ' || coalesce(p_event.payment_link, '(none)');
        return;
    end if;
    select e.id into v_other
      from echovalue.stripe_events e
     where e.session_id = p_event.session_id and e.state = 'applied' and e.id <> p_event.id;
    if v_other is not null then
        state := 'ignored';
        detail := 'checkout session already credited by event ' || v_other;
        credits := null;
        return;
    end if;
    -- a recharge is use of the wallet: it keeps the wallet from being purged as inactive
    update echovalue.wallets w
       set balance = w.balance + _stripe_event_credit.credits, last_used = pg_catalog.now()
     where w.hash = p_event.wallet_hash
    returning w.id, w.balance into wallet_id, v_balance;
    if wallet_id is null then
        state := 'unknown_wallet';
        detail := 'no wallet has hash ' || coalesce(p_event.wallet_hash, '(none)');
        credits := null;
        return;
    end if;
    perform echovalue._alert_recharged(wallet_id, _stripe_event_credit.credits, v_balance);
    -- cost is what the request charged: nothing; the new balance shows the credits granted
    perform echovalue._log(wallet_id, 'recharge', coalesce(p_event.http_method, 'POST'),
                           coalesce(p_event.http_path, '/stripe/webhook'), 200, null, 0, v_balance);
    state := 'applied';
end;
$$;

create or replace function echovalue._webhook_options_json(p_options jsonb) returns text
language sql immutable as $$
    select '{' || coalesce(pg_catalog.string_agg(echovalue._json_str(o.key) || ':' ||
                      case when o.key = 'routing_key' or o.key ~* '(token|secret|key)' then '"***"'
                           else o.value::text end, ',' order by o.key), '') || '}'
      from pg_catalog.jsonb_each(p_options) o
$$;

create or replace function echovalue._webhook_response(p_hook echovalue.webhooks, p_hash text) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"webhookId":%s,"webhook":%s,"headers":%s,%s,"hash":%s,"created":%s,"updated":%s}',
        echovalue._json_str(p_hook.name), echovalue._json_str(p_hook.url),
        echovalue._webhook_headers_json(p_hook.headers),
        case when p_hook.cron is not null
             then '"schedule":' || echovalue._webhook_schedule_json(p_hook)
             else pg_catalog.format('"format":%s,%s"options":%s,"includeAttachments":%s,"email":%s',
                 echovalue._json_str(p_hook.format),
                 case when p_hook.template is not null then '"template":' || p_hook.template::text || ',' else '' end,
                 echovalue._webhook_options_json(p_hook.options),
                 p_hook.include_attachments::text,
                 echovalue._json_str(echovalue._webhook_email(p_hook))) end,
        echovalue._json_str(p_hash), echovalue._json_str(echovalue._ts(p_hook.created)),
        echovalue._json_str(echovalue._ts(p_hook.updated)))
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
    -- ON DELETE CASCADE.
    delete from echovalue.tokens t
     where t.id = any (array(
         select x.id from echovalue.tokens x
          where x.revoked < pg_catalog.now()
                - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'))
          limit v_batch for update skip locked));
    get diagnostics v_revoked = row_count;

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
    v_token_ids := array(
        select t.id from echovalue.tokens t
         where t.wallet_id = any (v_wallet_ids) for update skip locked);
    -- tokens and kv of these wallets go by ON DELETE CASCADE, logs (no foreign key) here
    with gone as (
        delete from echovalue.wallets w
         where w.id = any (v_wallet_ids)
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = w.id and t.id <> all (v_token_ids))
        returning w.id
    ), gone_logs as (
        delete from echovalue.logs l where l.wallet_id in (select g.id from gone g)
    )
    select pg_catalog.count(*) into v_wallets from gone;

    return pg_catalog.jsonb_build_object(
        'kv', v_kv, 'logs', v_logs, 'token_rate', v_rate, 'token_usage', v_usage,
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'runs_and_tests', v_unmessaged,
        'wallets', v_wallets);
end;
$$;

create or replace function echovalue._delivery_log(
    p_wallet bigint, p_webhook_id text, p_status int, p_error text, p_kind text default 'mail'
) returns void
language sql volatile as $$
    select echovalue._log(p_wallet,
                          case when p_kind = 'alert_email' then 'email' else 'webhook-delivery' end,
                          case when p_kind = 'alert_email' then 'SMTP' else 'POST' end,
                          p_webhook_id, p_status, p_error, 0, w.balance)
      from echovalue.wallets w
     where w.id = p_wallet
$$;

create or replace function echovalue._test_claim_window() returns interval
language sql immutable as $$
    select interval '2 seconds'
$$;

create or replace function echovalue._delivery_lease(p_batch int, p_lease int, p_email boolean default false)
returns table (wallet_id bigint, id bigint, message_id bigint, attempts int, webhook_id text,
               webhook text, kind text, body text)
language plpgsql volatile as $$
declare
    v_due bigint[];
begin
    if p_email then
        v_due := array(
            select d.id from echovalue.deliveries d
             where d.state = 'pending' and d.kind = 'alert_email' and d.next_attempt_at <= pg_catalog.now()
             order by d.next_attempt_at, d.id
             limit p_batch
             for update skip locked);
    else
        v_due := array(
            select d.id from echovalue.deliveries d
             where d.state = 'pending' and d.kind = 'test' and d.attempts = 0
               and d.created > pg_catalog.now() - echovalue._test_claim_window()
             order by d.created
             limit p_batch
             for update skip locked);
    end if;
    if not p_email and pg_catalog.cardinality(v_due) < p_batch then
        v_due := v_due || array(
            select d.id from echovalue.deliveries d
             where d.state = 'pending' and d.kind not in ('test', 'alert_email')
               and d.next_attempt_at <= pg_catalog.now()
             order by d.next_attempt_at, d.id
             limit p_batch - pg_catalog.cardinality(v_due)
             for update skip locked);
    end if;
    return query
        update echovalue.deliveries d
           set attempts = d.attempts + 1,
               next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => p_lease)
         where d.id = any (v_due)
        returning d.wallet_id, d.id, d.message_id, d.attempts, d.webhook_id, d.webhook, d.kind, d.body;
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
                    perform pg_catalog.pg_notify('echovalue_webhook_test', v_row.id || ':' || v_row.webhook_id);
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
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    -- a test is never retried: its one attempt's retry is its failure
    update echovalue.deliveries d
       set state = case when delivery_record.outcome <> 'retry' then delivery_record.outcome
                        when d.kind = 'test' then 'failed' else 'pending' end,
           next_attempt_at = case when delivery_record.outcome = 'retry' and d.kind <> 'test'
               then pg_catalog.now() + pg_catalog.make_interval(secs => delivery_record.retry_seconds)
               else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt)
    returning d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind;
    v_changed := found;
    if v_kind = 'test' then
        perform pg_catalog.pg_notify('echovalue_webhook_test',
                                     delivery_record.delivery_id || ':' || v_webhook_id);
    elsif v_kind = 'scheduled' then
        -- the webhook shows how its latest run went
        update echovalue.webhooks h
           set last_status = case when delivery_record.outcome = 'delivered' then 'success' else 'failure' end,
               last_error = case when delivery_record.outcome = 'delivered' then null
                                 else coalesce(v_error, 'delivery failed') end
          from echovalue.deliveries d
         where d.id = delivery_record.delivery_id
           and h.wallet_id = d.wallet_id and h.name = d.webhook
           and h.last_run_at <= d.created;
    end if;
    if not v_changed then
        select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
          from echovalue.deliveries d where d.id = delivery_record.delivery_id;
        if not found then
            return false;   -- purged with its wallet or message
        end if;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end, v_kind);
    return v_changed;
end;
$$;

create or replace function echovalue.schedule_claim(batch int default 100) returns int
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    c_unpaid constant text := 'Insufficient credits: the run was skipped';
    v_hook echovalue.webhooks;
    v_for timestamptz;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_id bigint;
    v_status text;
    v_error text;
    v_ran timestamptz;
    v_n int := 0;
begin
    if schedule_claim.batch is null or schedule_claim.batch not between 1 and 10000 then
        raise exception 'echovalue: schedule_claim needs batch 1..10000'
            using errcode = 'invalid_parameter_value';
    end if;
    -- a webhook whose row or wallet another transaction holds is skipped and does not count
    for v_hook in
        select h.* from echovalue.webhooks h
          join echovalue.wallets w on w.id = h.wallet_id
         where h.next_run_at is not null and h.next_run_at <= pg_catalog.now()
         order by h.next_run_at
         limit schedule_claim.batch
         for update of h skip locked
         for no key update of w skip locked
    loop
        v_n := v_n + 1;
        v_status := v_hook.last_status;
        v_error := v_hook.last_error;
        v_ran := v_hook.last_run_at;
        begin
            v_for := greatest(v_hook.next_run_at,
                              echovalue.schedule_latest(v_hook.cron, v_hook.timezone, pg_catalog.now()));
            v_caller := row(v_hook.wallet_id, null, null, null, null, null, 'CRON',
                            '/webhook/' || v_hook.name, null, null)::echovalue.caller;
            if exists (select 1 from echovalue.deliveries d
                        where d.wallet_id = v_hook.wallet_id and d.webhook = v_hook.name
                          and d.kind = 'scheduled' and d.scheduled_for = v_for) then
                -- already run: cannot happen while next_run_at only moves forward; the unique
                -- index (webhook, occurrence) is the guard
                null;
            elsif v_hook.last_error = c_unpaid
                  and (select w.balance from echovalue.wallets w where w.id = v_hook.wallet_id)
                      < (echovalue._price('scheduled_run')).credits then
                -- still unpaid: recorded and logged at the first skip of the streak; a wallet
                -- kept only by its schedules is not "used" and goes after echovalue.inactive_days
                null;
            else
                v_paid := echovalue._pay(v_caller, 'scheduled_run');
                v_ran := pg_catalog.now();
                if v_paid.balance is null then
                    v_status := 'failure';
                    v_error := c_unpaid;
                else
                    insert into echovalue.deliveries as d (wallet_id, webhook, kind, body, scheduled_for)
                    values (v_hook.wallet_id, v_hook.name, 'scheduled',
                            echovalue._schedule_run_body(v_hook, v_for), v_for)
                    returning d.id into v_id;
                    perform echovalue._finish(v_caller, v_paid, 200, null);
                    v_status := null;
                    v_error := null;
                    perform pg_catalog.pg_notify('echovalue_mail', v_id::text);
                end if;
            end if;
            update echovalue.webhooks h
               set next_run_at = echovalue.schedule_next(h.cron, h.timezone, greatest(pg_catalog.now(), v_for)),
                   last_run_at = v_ran, last_status = v_status, last_error = v_error
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        exception when others then
            -- one webhook's failure must not hold up every other schedule
            raise warning 'echovalue: planning a run of webhook % of wallet % failed: %',
                v_hook.name, v_hook.wallet_id, sqlerrm;
            update echovalue.webhooks h
               set next_run_at = pg_catalog.now() + interval '1 minute', last_status = 'failure',
                   last_error = 'the run could not be planned; it is tried again in a minute'
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        end;
    end loop;
    return v_n;
end;
$$;

create or replace function echovalue._email_address_error(p_what text, p_email text) returns text
language sql immutable as $$
    select case
        when p_email is null or pg_catalog.char_length(p_email) > 254
             or pg_catalog.char_length(pg_catalog.split_part(p_email, '@', 1)) > 64
             or p_email !~ ('^[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&''*+/=?^_`{|}~-]+)*'
                            '@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+'
                            '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$')
        then pg_catalog.format('Bad Request: %s must be an email address of at most 254 characters',
                               p_what)
    end
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
    insert into echovalue.mail_relay as r (from_address) values (relay_register.from_address)
    on conflict (only_row) do update set from_address = excluded.from_address, updated = pg_catalog.now();
end;
$$;

create or replace function echovalue._alert_queue(p_wallet bigint, p_payload text) returns void
language plpgsql volatile as $$
declare
    v_settings echovalue.wallet_settings;
    v_email jsonb;
begin
    select * into v_settings from echovalue.wallet_settings s where s.wallet_id = p_wallet;
    if not found then
        return;
    end if;
    if v_settings.url is not null then
        insert into echovalue.deliveries (wallet_id, webhook, kind, body)
        values (p_wallet, null, 'alert', echovalue._webhook_body(v_settings.format,
                    v_settings.options, v_settings.template::text, p_payload));
        perform pg_catalog.pg_notify('echovalue_mail', '');
    end if;
    -- (without a relay there is no email to send: it would never leave the queue)
    if v_settings.email is not null and exists (select from echovalue.mail_relay) then
        v_email := echovalue._alert_email(p_payload)
                   || pg_catalog.jsonb_build_object('to', v_settings.email);
        insert into echovalue.deliveries (wallet_id, webhook, kind, body)
        values (p_wallet, null, 'alert_email', v_email::text);
        perform pg_catalog.pg_notify('echovalue_alert_email', '');
    end if;
end;
$$;

create or replace function echovalue._alert_low_balance(p_wallet bigint, p_balance bigint, p_threshold bigint)
returns void
language sql volatile as $$
    select echovalue._alert_queue(p_wallet, pg_catalog.format(
        '{"type":"wallet.low_balance","wallet":%s,"threshold":%s,"token_hash":%s}',
        p_balance, p_threshold, echovalue._json_str(w.hash)))
      from echovalue.wallets w
     where w.id = p_wallet
$$;

create or replace function echovalue._alert_recharged(p_wallet bigint, p_credits bigint, p_balance bigint)
returns void
language sql volatile as $$
    select echovalue._alert_queue(p_wallet, pg_catalog.format(
        '{"type":"wallet.recharged","credits":%s,"wallet":%s,"token_hash":%s}',
        p_credits, p_balance, echovalue._json_str(w.hash)))
      from echovalue.wallets w
     where w.id = p_wallet and w.low_balance_threshold > 0   -- threshold 0: alerts are off
$$;

create or replace function echovalue.alert_email_claim(batch int default 10, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, message_id text, recipient text, subject text,
               body text)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if alert_email_claim.batch is null or alert_email_claim.batch not between 1 and 10000
       or alert_email_claim.lease_seconds is null
       or alert_email_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: alert_email_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    return query
        select l.id, l.attempts, l.webhook_id, (l.body::jsonb) ->> 'to', (l.body::jsonb) ->> 'subject',
               (l.body::jsonb) ->> 'text'
          from echovalue._delivery_lease(alert_email_claim.batch, alert_email_claim.lease_seconds,
                                         p_email => true) l;
end;
$$;

create or replace function echovalue._settings_error(p_settings jsonb, p_template text) returns text
language plpgsql stable as $$
declare
    v_unknown text;
    v_threshold jsonb := p_settings -> 'low_balance_threshold';
    v_webhook jsonb := p_settings -> 'low_balance_webhook';
    v_email jsonb := p_settings -> 'low_balance_email';
begin
    select k into v_unknown from pg_catalog.jsonb_object_keys(p_settings) k
     where k not in ('low_balance_threshold', 'low_balance_webhook', 'low_balance_email')
     order by k limit 1;
    if v_unknown is not null then
        return pg_catalog.format('Bad Request: unknown field %s (expected low_balance_threshold, '
                                 'low_balance_webhook, low_balance_email)', pg_catalog.left(v_unknown, 64));
    end if;
    if pg_catalog.jsonb_typeof(v_threshold) <> 'null'
       and (pg_catalog.jsonb_typeof(v_threshold) <> 'number'
            or v_threshold::numeric <> pg_catalog.trunc(v_threshold::numeric)
            or v_threshold::numeric not between 0 and 1e15) then
        return 'Bad Request: low_balance_threshold must be an integer from 0 to 1000000000000000';
    end if;
    if pg_catalog.jsonb_typeof(v_webhook) not in ('object', 'null') then
        return 'Bad Request: low_balance_webhook must be a JSON object or null';
    end if;
    if pg_catalog.jsonb_typeof(v_webhook) = 'object' then
        select k into v_unknown from pg_catalog.jsonb_object_keys(v_webhook) k
         where k not in ('url', 'headers', 'format', 'template', 'options')
         order by k limit 1;
        if v_unknown is not null then
            return pg_catalog.format('Bad Request: low_balance_webhook: unknown field %s (expected url, '
                                     'headers, format, template, options)', pg_catalog.left(v_unknown, 64));
        end if;
        if echovalue._webhook_config_error(v_webhook, p_template) is not null then
            return pg_catalog.regexp_replace(echovalue._webhook_config_error(v_webhook, p_template),
                                             '^Bad Request: ', 'Bad Request: low_balance_webhook: ');
        end if;
    end if;
    if pg_catalog.jsonb_typeof(v_email) <> 'null' then
        if pg_catalog.jsonb_typeof(v_email) <> 'string' then
            return 'Bad Request: low_balance_email must be a string or null';
        end if;
        if echovalue._email_address_error('low_balance_email', v_email #>> '{}') is not null then
            return echovalue._email_address_error('low_balance_email', v_email #>> '{}');
        end if;
        if not exists (select from echovalue.mail_relay) then
            return 'Bad Request: low_balance_email needs an SMTP relay, and none is configured';
        end if;
    end if;
    return null;
end;
$$;

create or replace function echovalue.settings_get(
    token text,
    http_method text default 'GET',
    http_path text default '/token/settings'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(settings_get.token,
        settings_get.http_method, settings_get.http_path);
    v_paid echovalue.payment;
    v_body text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'settings_get');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select pg_catalog.format('{"low_balance_threshold":%s,"low_balance_webhook":%s,"low_balance_email":%s}',
               w.low_balance_threshold,
               case when s.url is null then 'null'
                    else pg_catalog.format('{"url":%s,"headers":%s,"format":%s,%s"options":%s}',
                        echovalue._json_str(s.url), echovalue._webhook_headers_json(s.headers),
                        echovalue._json_str(s.format),
                        case when s.template is not null then '"template":' || s.template::text || ',' else '' end,
                        echovalue._webhook_options_json(s.options)) end,
               echovalue._json_str(s.email))
      into v_body
      from echovalue.wallets w
      left join echovalue.wallet_settings s on s.wallet_id = w.id
     where w.id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
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
    insert into echovalue.wallet_settings as s (wallet_id, url, headers, format, template, options, email)
    values (v_caller.wallet_id, v_hook ->> 'url',
            coalesce(nullif(v_hook -> 'headers', 'null'::jsonb), '{}'),
            coalesce(v_hook ->> 'format', ''), v_template::json,
            coalesce(nullif(v_hook -> 'options', 'null'::jsonb), '{}'),
            v_settings ->> 'low_balance_email')
    on conflict (wallet_id) do update
       set url = excluded.url, headers = excluded.headers, format = excluded.format,
           template = excluded.template, options = excluded.options, email = excluded.email,
           updated = pg_catalog.now();
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

CREATE  FUNCTION "_alert_email"(
	"p_payload" TEXT /* Option < & str > */
) RETURNS jsonb /* Option < JsonB > */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'alert_email_sql_wrapper';

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
