-- echovalue 0.3.0 -> 0.4.0: the request context is a value (issue 16). _wallet_resolve returns
-- an echovalue.caller that _pay, _fail and _finish take; the request-state settings and
-- _caller_token are gone; each price names the endpoint of its log entries.
--
-- Layout: this head changes tables and types; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.prices add column endpoint text;
update echovalue.prices set endpoint = case
    when operation like 'kv\_%' then 'kv'
    when operation like 'webhook\_%' then 'webhook'
    when operation = 'email' then 'email'
    else 'token'
end;
alter table echovalue.prices alter column endpoint set not null;

-- Types as in schema.sql; payment gains its endpoint, so _pay, which returns it, goes first.
create type echovalue.caller as (
    wallet_id bigint, token_id bigint, is_root boolean,
    limit_per_request bigint, limit_daily bigint, limit_monthly bigint,
    method text, path text
);
drop function echovalue._pay(bigint, text, text, text, text, int);
drop type echovalue.payment;
create type echovalue.payment as (endpoint text, cost int, balance bigint, refusal echovalue.outcome);

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue._wallet_resolve(text);
drop function if exists echovalue._limits_allow(bigint, bigint, int);
drop function if exists echovalue._limit_headers(bigint);
drop function if exists echovalue._price(text);
drop function if exists echovalue._charge(bigint, int);
drop function if exists echovalue._insufficient(bigint, text, text, text);
drop function if exists echovalue._finish(bigint, text, text, text, int, text, int, bigint, text);
drop function if exists echovalue._pay(bigint, text, text, text, text, int);
drop function if exists echovalue._fail(bigint, text, text, text, text, int, text, int);
drop function if exists echovalue._endpoint_of(text);
drop function if exists echovalue._root_only(bigint, text, text, text);
drop function if exists echovalue._mail_route(text);
drop function if exists echovalue.request_refuse(text, text, int, text, text, text);
drop function if exists echovalue.delivery_claim(int, int);
drop function if exists echovalue._caller_token(bigint);

-- Functions new or changed in 0.4.0.

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
           p_method, p_path,
           t.last_used is null or t.last_used < pg_catalog.now() - interval '1 minute'
      into v_caller.wallet_id, v_caller.token_id, v_caller.is_root, v_caller.limit_per_request,
           v_caller.limit_daily, v_caller.limit_monthly, v_caller.method, v_caller.path, v_stale
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

create or replace function echovalue._window_refusal(
    p_caller echovalue.caller, p_cost int, p_limit text, p_description text, p_max bigint,
    p_window interval
) returns text
language plpgsql stable as $$
declare
    v_used bigint;
begin
    if p_max is null then
        return null;
    end if;
    v_used := echovalue._token_usage(p_caller.wallet_id, p_caller.token_id, p_window);
    if v_used + p_cost <= p_max then
        return null;
    end if;
    return echovalue._limit_refusal(p_limit, p_description, v_used, p_cost, p_max);
end;
$$;

create or replace function echovalue._limits_refusal(p_caller echovalue.caller, p_cost int) returns text
language sql stable as $$
    select coalesce(
        case when p_cost > p_caller.limit_per_request
             then echovalue._limit_refusal('per_request', 'Per-request limit exceeded',
                                           0, p_cost, p_caller.limit_per_request) end,
        echovalue._window_refusal(p_caller, p_cost, 'daily', 'Daily limit exceeded',
                                  p_caller.limit_daily, interval '24 hours'),
        echovalue._window_refusal(p_caller, p_cost, 'monthly', 'Monthly limit exceeded',
                                  p_caller.limit_monthly, interval '30 days'))
$$;

create or replace function echovalue._limit_headers(p_caller echovalue.caller) returns jsonb
language plpgsql stable as $$
declare
    v_headers jsonb := '{}';
begin
    if p_caller.limit_daily is null and p_caller.limit_monthly is null then
        return null;
    end if;
    if p_caller.limit_daily is not null then
        v_headers := v_headers || pg_catalog.jsonb_build_object('x-limit-daily-remaining',
            greatest(0, p_caller.limit_daily - echovalue._token_usage(
                p_caller.wallet_id, p_caller.token_id, interval '24 hours'))::text);
    end if;
    if p_caller.limit_monthly is not null then
        v_headers := v_headers || pg_catalog.jsonb_build_object('x-limit-monthly-remaining',
            greatest(0, p_caller.limit_monthly - echovalue._token_usage(
                p_caller.wallet_id, p_caller.token_id, interval '30 days'))::text);
    end if;
    return v_headers;
end;
$$;

create or replace function echovalue._price(p_operation text) returns echovalue.prices
language plpgsql stable as $$
declare
    v_price echovalue.prices;
begin
    select * into v_price from echovalue.prices p where p.operation = p_operation;
    if not found then
        raise exception 'echovalue: no price for operation "%"', p_operation
            using errcode = 'invalid_parameter_value';
    end if;
    return v_price;
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
    if p_limit_refusal is not null then
        perform echovalue._log(p_caller.wallet_id, p_endpoint, p_caller.method, p_caller.path,
                               402, (p_limit_refusal::json) ->> 'error_description', 0, v_balance);
        return echovalue._outcome(402, p_limit_refusal, 0, v_balance, 'application/json',
                                  echovalue._limit_headers(p_caller));
    end if;
    perform echovalue._log(p_caller.wallet_id, p_endpoint, p_caller.method, p_caller.path,
                           402, 'Insufficient credits', 0, v_balance);
    return echovalue._outcome(402, 'Insufficient credits', 0, v_balance,
                              p_headers => echovalue._limit_headers(p_caller));
end;
$$;

create or replace function echovalue._pay(
    p_caller echovalue.caller, p_operation text, p_units int default 1
) returns echovalue.payment
language plpgsql volatile as $$
declare
    v_price echovalue.prices := echovalue._price(p_operation);
    v_cost int := v_price.credits * p_units;
    v_refusal text;
    v_balance bigint;
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
        returning w.balance into v_balance;
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
    return row(v_price.endpoint, v_cost, v_balance, null)::echovalue.payment;
end;
$$;

create or replace function echovalue._finish(
    p_caller echovalue.caller, p_paid echovalue.payment, p_status int, p_body text,
    p_content_type text default 'text/plain; charset=utf-8'
) returns echovalue.outcome
language plpgsql volatile as $$
begin
    perform echovalue._log(p_caller.wallet_id, p_paid.endpoint, p_caller.method, p_caller.path,
                           p_status, case when p_status >= 400 then p_body end,
                           p_paid.cost, p_paid.balance);
    return echovalue._outcome(p_status, p_body, p_paid.cost, p_paid.balance, p_content_type,
                              -- (a call only for a caller with limits: most have none)
                              case when p_caller.limit_daily is not null
                                     or p_caller.limit_monthly is not null
                                   then echovalue._limit_headers(p_caller) end);
end;
$$;

create or replace function echovalue._fail(
    p_caller echovalue.caller, p_operation text, p_status int, p_error text,
    p_units int default 1
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_paid echovalue.payment := echovalue._pay(p_caller, p_operation, p_units);
begin
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    return echovalue._finish(p_caller, v_paid, p_status, p_error);
end;
$$;

create or replace function echovalue._root_only(p_caller echovalue.caller, p_operation text)
returns echovalue.outcome
language plpgsql volatile as $$
begin
    if p_caller.is_root then
        return null;
    end if;
    return echovalue._fail(p_caller, p_operation, 403, 'Forbidden');
end;
$$;

create or replace function echovalue.logs_get(
    token text,
    n text default null,
    http_method text default 'GET',
    http_path text default '/token/logs'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(logs_get.token, logs_get.http_method,
                                                            logs_get.http_path);
    v_n int;
    v_k int;
    v_paid echovalue.payment;
    v_entries text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_n := echovalue._logs_n(logs_get.n);
    if v_n is null then
        -- charged as one entry: the smallest logs request
        return echovalue._fail(v_caller, 'logs_entry', 400, 'Bad Request: n must be a positive integer');
    end if;
    select pg_catalog.count(*)::int into v_k
      from (select 1 from echovalue.logs l
             where l.wallet_id = v_caller.wallet_id and l.expires_at > pg_catalog.now()
             limit v_n) as kept;
    v_paid := echovalue._pay(v_caller, 'logs_entry', p_units => v_k);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- the wallet row is locked by the charge, so no entry of this wallet appears meanwhile
    select coalesce(pg_catalog.string_agg(echovalue._log_json(l), ',' order by l.id desc), '')
      into v_entries
      from (select * from echovalue.logs l
             where l.wallet_id = v_caller.wallet_id and l.expires_at > pg_catalog.now()
             order by l.id desc
             limit v_k) as l;
    return echovalue._finish(v_caller, v_paid, 200, '{"logs":[' || v_entries || '],"n":' || v_k || '}',
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
        return echovalue._fail(v_caller, 'kv_set', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_set');
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
        return echovalue._fail(v_caller, 'kv_get', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_get');
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
        return echovalue._fail(v_caller, 'kv_delete', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_delete');
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

create or replace function echovalue.recharge_link(
    token text,
    amount text default '1',
    http_method text default 'GET',
    http_path text default '/recharge?amount=1'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(recharge_link.token,
        recharge_link.http_method, recharge_link.http_path);
    v_amount text := coalesce(recharge_link.amount, '1');
    v_found boolean;
    v_link text;
    v_hash text;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if v_amount ~ '^[0-9]{1,9}$' then
        select true, t.link into v_found, v_link
          from echovalue.recharge_tiers t where t.amount = v_amount::int;
    end if;
    if v_found is null then
        return echovalue._fail(v_caller, 'recharge_link', 400, 'Bad Request: amount must be '
            || coalesce((select pg_catalog.string_agg(t.amount::text, ' or ' order by t.amount)
                           from echovalue.recharge_tiers t), 'a configured tier'));
    end if;
    if v_link is null then
        return echovalue._fail(v_caller, 'recharge_link', 501, 'Not Implemented');
    end if;
    v_paid := echovalue._pay(v_caller, 'recharge_link');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select w.hash into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200,
        echovalue._url_with_param(v_link, 'client_reference_id', v_hash));
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
        when p_route = '/token/keys' then
            case p_method when 'POST' then 'token_key_create' else 'token_key_list' end
        when p_route = '/token/keys/{id}' then 'token_key_revoke'
        when p_route = '/recharge' then 'recharge_link'
        when p_route in ('/token', '/') and p_method = 'POST' then 'token_new'
        when p_route in ('/token/logs', '/logs') and p_method = 'GET' then 'logs_entry'
        when p_route in ('/token', '/token/logs', '/', '/logs') then 'wallet_get'
    end
$$;

create or replace function echovalue.request_refuse(
    token text,
    route text,
    status int,
    error text,
    http_method text,
    http_path text
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token, http_method, http_path);
    v_operation text := echovalue._refusal_operation(route, http_method);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if status is null or status not between 400 and 599 or error is null then
        raise exception 'echovalue: request_refuse needs an error status (400-599) and text'
            using errcode = 'invalid_parameter_value';
    end if;
    if v_operation is null then
        return echovalue._outcome(status, error, null, null);
    end if;
    return echovalue._fail(v_caller, v_operation, status, error);
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
    -- unix-socket callers have no address: they share one bucket
    v_client inet := coalesce(client_addr, inet '0.0.0.0/0');
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

create or replace function echovalue.wallet_get(
    token text,
    http_method text default 'GET',
    http_path text default '/token'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token, http_method, http_path);
    v_paid echovalue.payment;
    v_body text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'wallet_get');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select pg_catalog.format('{"wallet":%s,"created":%s,"hash":%s}', v_paid.balance,
                             echovalue._json_str(echovalue._ts(w.created)), echovalue._json_str(w.hash))
      into v_body
      from echovalue.wallets w where w.id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
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
        (wallet_id, hash, label, prefix, limit_per_request, limit_daily, limit_monthly)
    values (v_caller.wallet_id, echovalue._token_hash(v_new),
            v_spec ->> 'label', echovalue._token_prefix(v_new),
            (v_spec #>> '{limits,per_request}')::numeric::bigint,
            (v_spec #>> '{limits,daily}')::numeric::bigint,
            (v_spec #>> '{limits,monthly}')::numeric::bigint)
    returning * into v_row;
    return echovalue._finish(v_caller, v_paid, 200,
        pg_catalog.format('{"id":%s,"token":%s,"label":%s,"limits":%s,"created":%s}',
            echovalue._json_str(v_row.public_id::text), echovalue._json_str(v_new),
            echovalue._json_str(v_row.label), echovalue._key_limits_json(v_row),
            echovalue._json_str(echovalue._ts(v_row.created))),
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
    select '{"keys":[' || coalesce(pg_catalog.string_agg(echovalue._key_json(t), ','
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
     where t.id = v_target.id;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue._address_class_allowed(p_class text) returns boolean
language sql stable as $$
    select p_class = 'public'
        or (p_class = 'loopback' and echovalue._setting_text('webhook_allow_insecure')::boolean)
$$;

create or replace function echovalue._webhook_url_error(p_url text) returns text
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

create or replace function echovalue.webhook_set(
    token text,
    body text,
    http_method text default 'POST',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_set.token, webhook_set.http_method,
                                                            webhook_set.http_path);
    v_error text;
    v_config jsonb;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    select e.p_error, e.p_config into v_error, v_config from echovalue._webhook_body_error(webhook_set.body) e;
    if v_error is not null then
        return echovalue._fail(v_caller, 'webhook_set', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_set');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    perform echovalue._mailbox_ensure(v_caller.wallet_id);
    insert into echovalue.webhooks as h (wallet_id, url, headers)
    values (v_caller.wallet_id, v_config ->> 'url',
            case when pg_catalog.jsonb_typeof(v_config -> 'headers') = 'object'
                 then v_config -> 'headers' else '{}'::jsonb end)
    on conflict (wallet_id)
    do update set url = excluded.url, headers = excluded.headers, updated = pg_catalog.now();
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
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
    select echovalue._json_str(w.hash) into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    select * into v_hook from echovalue.webhooks h where h.wallet_id = v_caller.wallet_id;
    if found then
        v_body := pg_catalog.format('{"webhook":%s,"headers":{%s},"email":%s,"hash":%s,"secret":%s}',
            echovalue._json_str(v_hook.url),
            (select coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ',' order by e.key), '')
               from pg_catalog.jsonb_object_keys(v_hook.headers) e(key)),
            v_email, v_hash, echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s}', v_email, v_hash);
    end if;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

create or replace function echovalue.webhook_delete(
    token text,
    http_method text default 'DELETE',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_delete.token, webhook_delete.http_method,
                                                            webhook_delete.http_path);
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_delete');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    delete from echovalue.webhooks h where h.wallet_id = v_caller.wallet_id;
    if not found then
        return echovalue._finish(v_caller, v_paid, 404, 'Webhook Not Found');
    end if;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

create or replace function echovalue._mail_route(
    p_recipient text, out o_caller echovalue.caller, out o_code int, out o_message text
)
language plpgsql volatile as $$
declare
    v_addr text := pg_catalog.lower(p_recipient);
    v_local text := pg_catalog.substring(v_addr, '^(.+)@[^@]+$');
    v_domain text := pg_catalog.rtrim(pg_catalog.substring(v_addr, '@([^@]+)$'), '.');
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
    else
        select m.wallet_id into o_caller.wallet_id from echovalue.mailboxes m where m.mailbox = v_local;
        o_caller.method := 'SMTP';
    end if;
    if o_caller.wallet_id is null then
        o_code := 550;
        o_message := '5.1.1 no such mailbox';
    elsif not exists (select 1 from echovalue.webhooks h where h.wallet_id = o_caller.wallet_id) then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 mailbox has no webhook configured';
    end if;
end;
$$;

create or replace function echovalue.mail_rcpt_check(recipient text) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
begin
    select * into v_route from echovalue._mail_route(mail_rcpt_check.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    if not exists (select 1 from echovalue.wallets w
                    where w.id = (v_route.o_caller).wallet_id
                      and w.balance >= (echovalue._price('email')).credits) then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;
    return row(250, '2.1.5 recipient ok')::echovalue.smtp_reply;
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
    attachment_contents bytea[] default '{}'
) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_message bigint;
    v_delivery bigint;
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
    -- logged under the mailbox address, never the token
    v_caller.path := echovalue._mailbox_address(
        (echovalue._mailbox_ensure(v_caller.wallet_id)).mailbox);
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
                  mail_receive.attachment_contents) with ordinality as a(filename, content_type, content, pos);
    insert into echovalue.deliveries as d (wallet_id, message_id)
    values (v_caller.wallet_id, v_message)
    returning d.id into v_delivery;
    perform echovalue._finish(v_caller, v_paid, 200, null);
    perform pg_catalog.pg_notify('echovalue_mail', v_delivery::text);
    return row(250, '2.0.0 queued as ' || v_message)::echovalue.smtp_reply;
end;
$$;

create or replace function echovalue.delivery_addresses_error(addrs inet[]) returns text
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_class text;
begin
    if coalesce(pg_catalog.cardinality(addrs), 0) = 0
       or pg_catalog.array_position(addrs, null) is not null then
        return 'the host has no address';
    end if;
    if pg_catalog.cardinality(addrs) > 256 then
        return 'the host has more than 256 addresses';
    end if;
    select c.class into v_class
      from pg_catalog.unnest(addrs) with ordinality as a(addr, n),
           echovalue.address_classify(a.addr) as c(class)
     where not echovalue._address_class_allowed(c.class)
     order by a.n
     limit 1;
    if v_class is not null then
        return pg_catalog.format('the host resolves to a non-public address (%s)', v_class);
    end if;
    return null;
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
begin
    if delivery_claim.batch is null or delivery_claim.batch not between 1 and 10000
       or delivery_claim.lease_seconds is null or delivery_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: delivery_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    loop
        v_claimed := 0;
        v_returned := 0;
        for v_row in
            with due as (
                select d.wallet_id, d.id from echovalue.deliveries d
                 where d.state = 'pending' and d.next_attempt_at <= pg_catalog.now()
                 order by d.next_attempt_at, d.id
                 limit delivery_claim.batch
                 for update skip locked)
            update echovalue.deliveries d
               set attempts = d.attempts + 1,
                   next_attempt_at = pg_catalog.now() + pg_catalog.make_interval(secs => delivery_claim.lease_seconds)
              from due
             where d.wallet_id = due.wallet_id and d.id = due.id
            returning d.wallet_id, d.id, d.message_id, d.attempts, d.webhook_id
        loop
            v_claimed := v_claimed + 1;
            select h.url, h.headers, mb.secret into url, headers, secret
              from echovalue.webhooks h
              join echovalue.mailboxes mb on mb.wallet_id = h.wallet_id
             where h.wallet_id = v_row.wallet_id;
            if not found then
                update echovalue.deliveries d
                   set state = 'failed', last_status = null, last_error = 'no webhook configured'
                 where d.wallet_id = v_row.wallet_id and d.id = v_row.id;
                perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, 'no webhook configured');
                continue;
            end if;
            delivery_id := v_row.id;
            attempt := v_row.attempts;
            url_error := pg_catalog.regexp_replace(echovalue._webhook_url_error(url),
                                                   '^Bad Request: ', '');
            webhook_id := v_row.webhook_id;
            payload := echovalue._delivery_payload(v_row.wallet_id, v_row.message_id);
            v_returned := v_returned + 1;
            return next;
        end loop;
        exit when v_claimed = 0 or v_returned > 0;
    end loop;
end;
$$;

-- Privileges, as in a fresh install (extension/src/sql/grants.sql).

-- Privileges, last: PUBLIC gets nothing; echovalue_api (the proxy) may use the schema and
-- execute the API functions only; echovalue_worker (the mailhook) only the worker functions.
-- Neither can read or write any table or call an internal `_` helper.

do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_api') then
        create role echovalue_api nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_worker') then
        create role echovalue_worker nologin;
    end if;
end;
$$;

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
    echovalue.logs_get(text, text, text, text),
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
    echovalue.attachment_get(text, text, text),
    echovalue.stripe_event_record(text, text, text),
    echovalue.maintenance_run()
to echovalue_api;

grant usage on schema echovalue to echovalue_worker;
grant execute on function
    echovalue.mail_rcpt_check(text),
    echovalue.mail_receive(text, text, text, text, text, text, text, jsonb, int, text[], text[], bytea[]),
    echovalue.address_classify(inet),
    echovalue.delivery_addresses_error(inet[]),
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.stripe_event_apply()
to echovalue_worker;
