-- echovalue 0.2.0 -> 0.3.0: a faster request path (issue 6).
--
-- Layout: first the new type and the drops, then the Rust functions new in 0.3.0, then every
-- SQL function replaced in place (the new ones created), then the privileges. tests/run.sh
-- creates 0.2.0 (and 0.1.0), updates it and compares the catalog with a fresh install.

-- What _pay returns.
create type echovalue.payment as (
    cost    int,
    balance bigint,
    refusal echovalue.outcome
);

-- _setting is a Rust function now (created below); only plpgsql bodies call it.
drop function echovalue._setting(text);

-- Logs: no foreign key to wallets (see schema.sql); maintenance deletes a purged wallet's logs.
alter table echovalue.logs drop constraint logs_wallet_id_fkey;

-- _name_error and _caller_token are Rust functions now (created below), as _setting.
drop function echovalue._name_error(text, text);
drop function echovalue._caller_token(bigint);

-- Rust functions new in 0.3.0 (as cargo pgrx generates them).

/* <begin connected objects> */
-- extension/src/gucs.rs:343
-- echovalue::gucs::_caller_token
CREATE  FUNCTION "_caller_token"(
	"p_wallet" bigint /* i64 */
) RETURNS bigint /* Option < i64 > */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'caller_token_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- extension/src/names.rs:44
-- echovalue::names::_name_error
CREATE  FUNCTION "_name_error"(
	"p_what" TEXT, /* Option < & str > */
	"p_name" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < String > */
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'name_error_sql_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- extension/src/gucs.rs:321
-- echovalue::gucs::_setting
CREATE  FUNCTION "_setting"(
	"p_name" TEXT /* & str */
) RETURNS INT /* i32 */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'setting_wrapper';
/* </end connected objects> */

/* <begin connected objects> */
-- extension/src/token.rs:69
-- echovalue::token::_token_hash
CREATE  FUNCTION "_token_hash"(
	"token" TEXT /* & str */
) RETURNS bytea /* :: std :: option :: Option < Vec < u8 > > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'token_hash_wrapper';
/* </end connected objects> */

-- The functions of the files 0.2.0 had, replaced in place.

-- A timestamp as RFC 3339 in UTC with microseconds and `Z`.
create or replace function echovalue._ts(p_at timestamptz) returns text
language sql stable as $$
    select pg_catalog.to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A text as a JSON string literal (`null` for NULL).
create or replace function echovalue._json_str(p_text text) returns text
language sql immutable as $$
    select coalesce(pg_catalog.to_json(p_text)::text, 'null')
$$;

-- Builds an outcome row; plain text unless told otherwise.
create or replace function echovalue._outcome(
    p_status int, p_body text, p_cost int, p_balance bigint,
    p_content_type text default 'text/plain; charset=utf-8', p_headers jsonb default null
) returns echovalue.outcome
language sql immutable as $$
    select row(p_status, p_body, p_content_type, p_cost, p_balance, p_headers)::echovalue.outcome
$$;

-- The 401 outcome: no wallet, so no cost, no balance, no log.
create or replace function echovalue._unauthorized() returns echovalue.outcome
language sql immutable as $$
    select echovalue._outcome(401, 'Unauthorized', null, null)
$$;

-- The wallet of a live token, or NULL (malformed, unknown or revoked). It also records, for
-- the rest of the transaction, which non-root token is paying (the setting
-- echovalue.caller_token, '<wallet>:<token>', or '' for a root token): every charge of that
-- wallet in this transaction then goes through the token's spending limits (_charge).
-- The token row is read, not locked: requests of one wallet meet only on the wallet's row, so
-- a hot token costs one row lock per request, not two. last_used is written at most once a
-- minute per token, which keeps a write (and its WAL) off most requests.
create or replace function echovalue._wallet_resolve(p_token text) returns bigint
language plpgsql volatile as $$
declare
    v_wallet bigint;
    v_token bigint;
    v_caller text;
    v_stale boolean;
    v_hash bytea;
begin
    -- Few statements and expressions: each costs a set-up in every transaction, and this runs
    -- on every request. A malformed token gets a NULL hash, which matches no token; the hash
    -- is computed once here, not per row if the planner ever scans.
    v_hash := echovalue._token_hash(p_token);
    select t.wallet_id, t.id,
           case when t.is_root then '' else t.wallet_id || ':' || t.id end,
           t.last_used is null or t.last_used < pg_catalog.now() - interval '1 minute'
      into v_wallet, v_token, v_caller, v_stale
      from echovalue.tokens t
     where t.hash = v_hash and t.revoked is null;
    if v_stale then
        -- SKIP LOCKED: a concurrent request of this token is already recording its use
        update echovalue.tokens t set last_used = pg_catalog.now()
         where t.id = (select x.id from echovalue.tokens x where x.id = v_token
                          for update skip locked);
    end if;
    -- set only when changed: a set_config costs more than the read, and at the start of a
    -- transaction both hold '' (the values set here are transaction-local)
    if coalesce(pg_catalog.current_setting('echovalue.caller_token', true), '')
           <> coalesce(v_caller, '')
       or coalesce(pg_catalog.current_setting('echovalue.limit_refusal', true), '') <> '' then
        perform pg_catalog.set_config('echovalue.caller_token', coalesce(v_caller, ''), true);
        perform pg_catalog.set_config('echovalue.limit_refusal', '', true);
    end if;
    return v_wallet;
end;
$$;

-- Credits a token spent in the rolling window ending now: whole hourly buckets, counting the
-- oldest hour in full, so a spend leaves the window between p_window and p_window + 1 hour
-- after it was made (a limit is never overrun, at worst it frees up to an hour late).
-- (plpgsql, so its plan is kept for the session, not made again in every transaction)
create or replace function echovalue._token_usage(p_wallet bigint, p_token bigint, p_window interval)
returns bigint
language plpgsql stable as $$
begin
    return (select coalesce(pg_catalog.sum(u.credits), 0)::bigint
              from echovalue.token_usage u
             where u.wallet_id = p_wallet and u.token_id = p_token
               and u.hour >= pg_catalog.date_trunc('hour', pg_catalog.now() - p_window, 'UTC'));
end;
$$;

-- Whether p_token may spend p_cost more credits under its limits. When not, the 402 body is
-- kept in echovalue.limit_refusal for _insufficient to answer with.
create or replace function echovalue._limits_allow(p_wallet bigint, p_token bigint, p_cost int)
returns boolean
language plpgsql volatile as $$
declare
    v_token echovalue.tokens;
    v_used bigint;
    v_refusal text;
begin
    select * into v_token from echovalue.tokens t where t.id = p_token;
    if v_token.limit_per_request is not null and p_cost > v_token.limit_per_request then
        v_refusal := echovalue._limit_refusal('per_request', 'Per-request limit exceeded',
                                              0, p_cost, v_token.limit_per_request);
    end if;
    if v_refusal is null and v_token.limit_daily is not null then
        v_used := echovalue._token_usage(p_wallet, p_token, interval '24 hours');
        if v_used + p_cost > v_token.limit_daily then
            v_refusal := echovalue._limit_refusal('daily', 'Daily limit exceeded',
                                                  v_used, p_cost, v_token.limit_daily);
        end if;
    end if;
    if v_refusal is null and v_token.limit_monthly is not null then
        v_used := echovalue._token_usage(p_wallet, p_token, interval '30 days');
        if v_used + p_cost > v_token.limit_monthly then
            v_refusal := echovalue._limit_refusal('monthly', 'Monthly limit exceeded',
                                                  v_used, p_cost, v_token.limit_monthly);
        end if;
    end if;
    if v_refusal is null then
        return true;
    end if;
    perform pg_catalog.set_config('echovalue.limit_refusal', v_refusal, true);
    return false;
end;
$$;

-- The JSON body of a spending-limit 402, compact and in SPEC section 9's order.
create or replace function echovalue._limit_refusal(
    p_limit text, p_description text, p_current bigint, p_requested bigint, p_max bigint
) returns text
language sql immutable as $$
    select pg_catalog.format(
        '{"error":"spending_limit_exceeded","error_description":%s,"limit":%s,"current":%s,"requested":%s,"max":%s}',
        echovalue._json_str(p_description), echovalue._json_str(p_limit),
        p_current, p_requested, p_max)
$$;

-- x-limit-daily-remaining / x-limit-monthly-remaining for a paying token with those limits,
-- so clients need no extra call; NULL for root tokens and tokens without them.
create or replace function echovalue._limit_headers(p_wallet bigint) returns jsonb
language plpgsql stable as $$
declare
    v_token bigint := echovalue._caller_token(p_wallet);
    v_daily bigint;
    v_monthly bigint;
    v_headers jsonb := '{}';
begin
    if v_token is null then
        return null;
    end if;
    select t.limit_daily, t.limit_monthly into v_daily, v_monthly
      from echovalue.tokens t where t.id = v_token;
    if v_daily is not null then
        v_headers := v_headers || pg_catalog.jsonb_build_object('x-limit-daily-remaining',
            greatest(0, v_daily - echovalue._token_usage(p_wallet, v_token, interval '24 hours'))::text);
    end if;
    if v_monthly is not null then
        v_headers := v_headers || pg_catalog.jsonb_build_object('x-limit-monthly-remaining',
            greatest(0, v_monthly - echovalue._token_usage(p_wallet, v_token, interval '30 days'))::text);
    end if;
    return nullif(v_headers, '{}');
end;
$$;

-- What a listing shows of a token: its first 19 and last 4 characters, enough to tell
-- tokens apart and to match a leaked one, not enough to use it.
create or replace function echovalue._token_prefix(p_token text) returns text
language sql immutable strict parallel safe as $$
    select pg_catalog.left(p_token, 19) || '...' || pg_catalog.right(p_token, 4)
$$;

-- Price of an operation in credits; an unknown operation is a caller bug.
create or replace function echovalue._price(p_operation text) returns int
language plpgsql stable as $$
declare
    v_credits int;
begin
    select p.credits into v_credits from echovalue.prices p where p.operation = p_operation;
    if v_credits is null then
        raise exception 'echovalue: no price for operation "%"', p_operation
            using errcode = 'invalid_parameter_value';
    end if;
    return v_credits;
end;
$$;

-- A wallet's new last_used: moved only when an hour old. last_used only decides when an
-- unused wallet is deleted (after echovalue.inactive_days), and leaving the indexed column
-- alone lets the charge be a HOT update: no new index entries, less WAL per request.
create or replace function echovalue._last_used(p_last_used timestamptz) returns timestamptz
language sql stable as $$
    select case when p_last_used > pg_catalog.now() - interval '1 hour' then p_last_used
                else pg_catalog.now() end
$$;

-- Takes p_cost credits if the wallet has them and the paying token's spending limits allow
-- it. The wallet's row lock serializes every charge of a wallet, so the balance never goes
-- negative; for a limited token the row is locked before its usage is read, so parallel
-- requests of one token cannot overrun a limit either (each reads the usage the previous one
-- committed). A non-root token's spend is added to its hourly usage bucket in the same
-- transaction. Returns the new balance, or NULL (see echovalue.limit_refusal for why).
create or replace function echovalue._charge(p_wallet bigint, p_cost int) returns bigint
language plpgsql volatile as $$
declare
    v_token bigint := echovalue._caller_token(p_wallet);
    v_balance bigint;
begin
    if v_token is not null and p_cost > 0 then
        perform from echovalue.wallets w where w.id = p_wallet for no key update;
        if not echovalue._limits_allow(p_wallet, v_token, p_cost) then
            return null;
        end if;
    end if;
    update echovalue.wallets w
       set balance = w.balance - p_cost, last_used = echovalue._last_used(w.last_used)
     where w.id = p_wallet and w.balance >= p_cost
    returning w.balance into v_balance;
    if v_balance is not null and v_token is not null and p_cost > 0 then
        insert into echovalue.token_usage as u (wallet_id, token_id, hour, credits)
        values (p_wallet, v_token, pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC'), p_cost)
        on conflict (wallet_id, token_id, hour) do update set credits = u.credits + excluded.credits;
    end if;
    return v_balance;
end;
$$;

-- Appends one request log entry; it expires after echovalue.log_retention_days.
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
         p_method, p_path, p_endpoint, p_status, p_error, p_cost, p_balance);
end;
$$;

-- The 402 answer for a request that cannot be paid: nothing charged, logged with cost 0.
-- Either the wallet lacks the credits (`Insufficient credits`) or the paying token's spending
-- limit refused the charge (the JSON body _limits_allow left in echovalue.limit_refusal).
create or replace function echovalue._insufficient(
    p_wallet bigint, p_endpoint text, p_method text, p_path text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_balance bigint;
    v_refusal text := nullif(pg_catalog.current_setting('echovalue.limit_refusal', true), '');
begin
    update echovalue.wallets w set last_used = echovalue._last_used(w.last_used)
     where w.id = p_wallet
    returning w.balance into v_balance;
    if v_balance is null then
        -- the wallet was purged while this request waited for its lock
        return echovalue._unauthorized();
    end if;
    if v_refusal is not null then
        perform pg_catalog.set_config('echovalue.limit_refusal', '', true);
        perform echovalue._log(p_wallet, p_endpoint, p_method, p_path, 402,
                               (v_refusal::json) ->> 'error_description', 0, v_balance);
        return echovalue._outcome(402, v_refusal, 0, v_balance, 'application/json',
                                  echovalue._limit_headers(p_wallet));
    end if;
    perform echovalue._log(p_wallet, p_endpoint, p_method, p_path,
                           402, 'Insufficient credits', 0, v_balance);
    return echovalue._outcome(402, 'Insufficient credits', 0, v_balance,
                              p_headers => echovalue._limit_headers(p_wallet));
end;
$$;

-- Logs a charged request (its body is the error text when status >= 400) and answers it.
create or replace function echovalue._finish(
    p_wallet bigint, p_endpoint text, p_method text, p_path text,
    p_status int, p_body text, p_cost int, p_balance bigint,
    p_content_type text default 'text/plain; charset=utf-8'
) returns echovalue.outcome
language plpgsql volatile as $$
begin
    perform echovalue._log(p_wallet, p_endpoint, p_method, p_path, p_status,
                           case when p_status >= 400 then p_body end, p_cost, p_balance);
    return echovalue._outcome(p_status, p_body, p_cost, p_balance, p_content_type,
                              -- (a call only for a paying token that may have limits)
                              case when echovalue._caller_token(p_wallet) is not null
                                   then echovalue._limit_headers(p_wallet) end);
end;
$$;

-- Pays for p_units of p_operation from a resolved wallet, within the paying token's limits:
-- (cost, balance after, NULL), or (0, NULL, the 402 outcome) with nothing taken and the refusal
-- logged: a NULL balance means refused (test that, not `refusal is not null`, which is false
-- for an outcome with a NULL field). Every API function pays through here.
create or replace function echovalue._pay(
    p_wallet bigint, p_operation text, p_endpoint text, p_method text, p_path text,
    p_units int default 1
) returns echovalue.payment
language plpgsql volatile as $$
declare
    v_cost int := echovalue._price(p_operation) * p_units;
    v_balance bigint := echovalue._charge(p_wallet, v_cost);
begin
    if v_balance is null then
        return row(0, null, echovalue._insufficient(p_wallet, p_endpoint, p_method, p_path))
            ::echovalue.payment;
    end if;
    return row(v_cost, v_balance, null)::echovalue.payment;
end;
$$;

-- An error on a resolved wallet: charged the operation's price and logged, or 402.
create or replace function echovalue._fail(
    p_wallet bigint, p_operation text, p_endpoint text, p_method text, p_path text,
    p_status int, p_error text, p_units int default 1
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_paid echovalue.payment := echovalue._pay(p_wallet, p_operation, p_endpoint, p_method,
                                               p_path, p_units);
begin
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    return echovalue._finish(p_wallet, p_endpoint, p_method, p_path,
                             p_status, p_error, v_paid.cost, v_paid.balance);
end;
$$;

-- The log endpoint of a price operation.
create or replace function echovalue._endpoint_of(p_operation text) returns text
language sql immutable as $$
    select case
        when p_operation like 'kv\_%' then 'kv'
        when p_operation like 'webhook\_%' then 'webhook'
        when p_operation = 'email' then 'email'
        else 'token'
    end
$$;

-- A ttl parameter in seconds: NULL or '0' mean the maximum; NULL result when invalid.
-- At most 9 digits are cast, so huge inputs cannot overflow (the maximum is below 10^9).
create or replace function echovalue._ttl_seconds(p_ttl text) returns int
language plpgsql stable as $$
declare
    v_max int := echovalue._setting('max_ttl_seconds');
    v_ttl int;
begin
    if p_ttl is null then
        return v_max;
    end if;
    if p_ttl !~ '^[0-9]+$' then
        return null;
    end if;
    if pg_catalog.ltrim(p_ttl, '0') = '' then
        return v_max;
    end if;
    if pg_catalog.char_length(pg_catalog.ltrim(p_ttl, '0')) > 9 then
        return null;
    end if;
    v_ttl := p_ttl::int;
    return case when v_ttl <= v_max then v_ttl end;
end;
$$;

-- POST /token: a new wallet with echovalue.start_credits and its root token (the body).
-- At most one per echovalue.token_rate_seconds per client address, across all proxies.
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
    v_wallet bigint;
    v_cost int;
    v_balance bigint;
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
    values (v_start, pg_catalog.encode(echovalue._token_hash(v_token), 'hex'))
    returning id into v_wallet;
    insert into echovalue.tokens (wallet_id, hash, is_root, label, prefix)
    values (v_wallet, echovalue._token_hash(v_token), true, 'root',
            echovalue._token_prefix(v_token));

    -- token_new is free by default; a priced one is paid from the starting credits if it can be
    v_cost := echovalue._price('token_new');
    v_balance := echovalue._charge(v_wallet, v_cost);
    if v_balance is null then
        v_cost := 0;
        v_balance := v_start;
    end if;
    perform echovalue._log(v_wallet, 'token', http_method, http_path, 200, null, v_cost, v_balance);
    return echovalue._outcome(200, v_token, v_cost, v_balance);
end;
$$;

-- GET /token: {"wallet":<balance after this charge>,"created":"…","hash":"…"}.
create or replace function echovalue.wallet_get(
    token text,
    http_method text default 'GET',
    http_path text default '/token'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(token);
    v_paid echovalue.payment;
    v_body text;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_wallet, 'wallet_get', 'token', http_method, http_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select pg_catalog.format('{"wallet":%s,"created":%s,"hash":%s}', v_paid.balance,
                             echovalue._json_str(echovalue._ts(w.created)), echovalue._json_str(w.hash))
      into v_body
      from echovalue.wallets w where w.id = v_wallet;
    return echovalue._finish(v_wallet, 'token', http_method, http_path, 200, v_body,
                             v_paid.cost, v_paid.balance, 'application/json');
end;
$$;

-- Why a kv_set is refused, or NULL; checks group, key, value, then ttl.
create or replace function echovalue._kv_set_error(p_grp text, p_key text, p_value text, p_ttl text)
returns text
language plpgsql stable as $$
declare
    v_max_value int := echovalue._setting('max_value_chars');
begin
    if echovalue._name_error('group', p_grp) is not null then
        return echovalue._name_error('group', p_grp);
    end if;
    if echovalue._name_error('key', p_key) is not null then
        return echovalue._name_error('key', p_key);
    end if;
    if p_value is null then
        return 'Bad Request: value is required';
    end if;
    if pg_catalog.char_length(p_value) > v_max_value then
        return pg_catalog.format('Bad Request: value must be at most %s characters', v_max_value);
    end if;
    if echovalue._ttl_seconds(p_ttl) is null then
        return pg_catalog.format('Bad Request: ttl must be an integer from 1 to %s',
                                 echovalue._setting('max_ttl_seconds'));
    end if;
    return null;
end;
$$;

-- POST /kv/{grp}/{key}?ttl=: stores (overwrites) the value with a fresh expiry; body `OK`.
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
    v_wallet bigint := echovalue._wallet_resolve(kv_set.token);
    v_path text := coalesce(kv_set.http_path, '/kv/' || kv_set.grp || '/' || kv_set.key);
    v_error text;
    v_paid echovalue.payment;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_error := echovalue._kv_set_error(kv_set.grp, kv_set.key, kv_set.value, kv_set.ttl);
    if v_error is not null then
        return echovalue._fail(v_wallet, 'kv_set', 'kv', kv_set.http_method, v_path, 400, v_error);
    end if;
    v_paid := echovalue._pay(v_wallet, 'kv_set', 'kv', kv_set.http_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    insert into echovalue.kv as k (wallet_id, grp, key, value, expires_at)
    values (v_wallet, kv_set.grp, kv_set.key, kv_set.value,
            pg_catalog.now() + pg_catalog.make_interval(secs => echovalue._ttl_seconds(kv_set.ttl)))
    on conflict on constraint kv_pkey
    do update set value = excluded.value, expires_at = excluded.expires_at;
    return echovalue._finish(v_wallet, 'kv', kv_set.http_method, v_path, 200, 'OK',
                             v_paid.cost, v_paid.balance);
end;
$$;

-- GET /kv/{grp}/{key}: the value; 404 `Key Not Found` when missing or expired.
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
    v_wallet bigint := echovalue._wallet_resolve(kv_get.token);
    v_path text := coalesce(kv_get.http_path, '/kv/' || kv_get.grp || '/' || kv_get.key);
    v_error text;
    v_paid echovalue.payment;
    v_value text;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_error := coalesce(echovalue._name_error('group', kv_get.grp), echovalue._name_error('key', kv_get.key));
    if v_error is not null then
        return echovalue._fail(v_wallet, 'kv_get', 'kv', kv_get.http_method, v_path, 400, v_error);
    end if;
    v_paid := echovalue._pay(v_wallet, 'kv_get', 'kv', kv_get.http_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select k.value into v_value
      from echovalue.kv k
     where k.wallet_id = v_wallet and k.grp = kv_get.grp and k.key = kv_get.key
       and k.expires_at > pg_catalog.now();
    if not found then
        return echovalue._finish(v_wallet, 'kv', kv_get.http_method, v_path, 404, 'Key Not Found',
                                 v_paid.cost, v_paid.balance);
    end if;
    return echovalue._finish(v_wallet, 'kv', kv_get.http_method, v_path, 200, v_value,
                             v_paid.cost, v_paid.balance);
end;
$$;

-- DELETE /kv/{grp}/{key}: `OK`; 404 `Key Not Found` when missing or already expired.
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
    v_wallet bigint := echovalue._wallet_resolve(kv_delete.token);
    v_path text := coalesce(kv_delete.http_path, '/kv/' || kv_delete.grp || '/' || kv_delete.key);
    v_error text;
    v_paid echovalue.payment;
    v_live boolean;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_error := coalesce(echovalue._name_error('group', kv_delete.grp), echovalue._name_error('key', kv_delete.key));
    if v_error is not null then
        return echovalue._fail(v_wallet, 'kv_delete', 'kv', kv_delete.http_method, v_path, 400, v_error);
    end if;
    v_paid := echovalue._pay(v_wallet, 'kv_delete', 'kv', kv_delete.http_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- an expired row goes too, but the answer is as if it were already purged
    delete from echovalue.kv k
     where k.wallet_id = v_wallet and k.grp = kv_delete.grp and k.key = kv_delete.key
    returning k.expires_at > pg_catalog.now() into v_live;
    if v_live is not true then
        return echovalue._finish(v_wallet, 'kv', kv_delete.http_method, v_path, 404,
                                 'Key Not Found', v_paid.cost, v_paid.balance);
    end if;
    return echovalue._finish(v_wallet, 'kv', kv_delete.http_method, v_path, 200, 'OK',
                             v_paid.cost, v_paid.balance);
end;
$$;

-- One log entry as a JSON object; `error` is left out when NULL.
create or replace function echovalue._log_json(p_log echovalue.logs) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"id":%s,"method":%s,"path":%s,"endpoint":%s,"status_code":%s,%s"timestamp":%s,"expiration":%s,"cost":%s,"balance":%s}',
        echovalue._json_str(p_log.id::text), echovalue._json_str(p_log.method),
        echovalue._json_str(p_log.path), echovalue._json_str(p_log.endpoint), p_log.status_code,
        case when p_log.error is not null
             then '"error":' || echovalue._json_str(p_log.error) || ',' else '' end,
        echovalue._json_str(echovalue._ts(p_log.created)),
        echovalue._json_str(echovalue._ts(p_log.expires_at)), p_log.cost, p_log.balance)
$$;

-- The n parameter: NULL means echovalue.logs_default_n, above echovalue.logs_max_n is cut;
-- NULL result when not a positive integer. Long digit strings are cut, never cast.
create or replace function echovalue._logs_n(p_n text) returns int
language plpgsql stable as $$
declare
    v_max int := echovalue._setting('logs_max_n');
    v_digits text;
begin
    if p_n is null then
        return least(echovalue._setting('logs_default_n'), v_max);
    end if;
    if p_n !~ '^[0-9]+$' then
        return null;
    end if;
    v_digits := pg_catalog.ltrim(p_n, '0');
    if v_digits = '' then
        return null;
    end if;
    if pg_catalog.char_length(v_digits) > 9 then
        return v_max;
    end if;
    return least(v_digits::int, v_max);
end;
$$;

-- GET /token/logs?n=: {"logs":[newest first],"n":K} with K = min(n, entries kept);
-- 402 when the wallet cannot pay for all K. The request itself is logged after.
create or replace function echovalue.logs_get(
    token text,
    n text default null,
    http_method text default 'GET',
    http_path text default '/token/logs'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(logs_get.token);
    v_n int;
    v_k int;
    v_paid echovalue.payment;
    v_entries text;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_n := echovalue._logs_n(logs_get.n);
    if v_n is null then
        -- charged as one entry: the smallest logs request
        return echovalue._fail(v_wallet, 'logs_entry', 'token', logs_get.http_method, logs_get.http_path,
                               400, 'Bad Request: n must be a positive integer');
    end if;
    select pg_catalog.count(*)::int into v_k
      from (select 1 from echovalue.logs l
             where l.wallet_id = v_wallet and l.expires_at > pg_catalog.now()
             limit v_n) as kept;
    v_paid := echovalue._pay(v_wallet, 'logs_entry',
                             'token', logs_get.http_method, logs_get.http_path, p_units => v_k);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- the wallet row is locked by the charge, so no entry of this wallet appears meanwhile
    select coalesce(pg_catalog.string_agg(echovalue._log_json(l), ',' order by l.id desc), '')
      into v_entries
      from (select * from echovalue.logs l
             where l.wallet_id = v_wallet and l.expires_at > pg_catalog.now()
             order by l.id desc
             limit v_k) as l;
    return echovalue._finish(v_wallet, 'token', logs_get.http_method, logs_get.http_path, 200,
                             '{"logs":[' || v_entries || '],"n":' || v_k || '}',
                             v_paid.cost, v_paid.balance, 'application/json');
end;
$$;

-- A URL with `name=value` added to its query: `?` or `&` as the URL needs, none after a
-- trailing `?` or `&`, and before any `#fragment` (after it, Stripe would never see it).
create or replace function echovalue._url_with_param(p_url text, p_name text, p_value text) returns text
language sql immutable strict parallel safe as $$
    select case
               when pg_catalog.strpos(base, '?') = 0 then base || '?'
               when base ~ '[?&]$' then base
               else base || '&'
           end || p_name || '=' || p_value || fragment
      from (select pg_catalog.split_part(p_url, '#', 1) as base,
                   case when pg_catalog.strpos(p_url, '#') > 0
                        then pg_catalog.substr(p_url, pg_catalog.strpos(p_url, '#')) else '' end as fragment) as u
$$;

-- GET /recharge?amount=: the tier's link + client_reference_id=<wallet hash>;
-- 400 for an amount that is not a tier, 501 when the tier has no link configured.
create or replace function echovalue.recharge_link(
    token text,
    amount text default '1',
    http_method text default 'GET',
    http_path text default '/recharge?amount=1'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(recharge_link.token);
    v_amount text := coalesce(recharge_link.amount, '1');
    v_found boolean;
    v_link text;
    v_hash text;
    v_paid echovalue.payment;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    if v_amount ~ '^[0-9]{1,9}$' then
        select true, t.link into v_found, v_link
          from echovalue.recharge_tiers t where t.amount = v_amount::int;
    end if;
    if v_found is null then
        return echovalue._fail(v_wallet, 'recharge_link', 'token', recharge_link.http_method,
            recharge_link.http_path, 400,
            'Bad Request: amount must be '
            || coalesce((select pg_catalog.string_agg(t.amount::text, ' or ' order by t.amount)
                           from echovalue.recharge_tiers t), 'a configured tier'));
    end if;
    if v_link is null then
        return echovalue._fail(v_wallet, 'recharge_link', 'token', recharge_link.http_method,
                               recharge_link.http_path, 501, 'Not Implemented');
    end if;
    v_paid := echovalue._pay(v_wallet, 'recharge_link',
                             'token', recharge_link.http_method, recharge_link.http_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select w.hash into v_hash from echovalue.wallets w where w.id = v_wallet;
    return echovalue._finish(v_wallet, 'token', recharge_link.http_method, recharge_link.http_path, 200,
        echovalue._url_with_param(v_link, 'client_reference_id', v_hash),
        v_paid.cost, v_paid.balance);
end;
$$;

-- Charges `operation`'s price and logs `status`/`error`; 402 when the wallet cannot pay.
create or replace function echovalue.request_refuse(
    token text,
    operation text,
    status int,
    error text,
    http_method text,
    http_path text
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(token);
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    if status is null or status not between 400 and 599 or error is null then
        raise exception 'echovalue: request_refuse needs an error status (400-599) and text'
            using errcode = 'invalid_parameter_value';
    end if;
    return echovalue._fail(v_wallet, operation, echovalue._endpoint_of(operation),
                           http_method, http_path, status, error);
end;
$$;

-- One batch per table: expired keys, expired logs, stale rate-limit rows, token usage buckets
-- past the longest limit window, tokens revoked echovalue.revoked_token_days ago, attachments
-- older than echovalue.attachment_retention_hours, old messages with a finished delivery, and wallets unused for
-- echovalue.inactive_days with all their data. Returns the rows deleted per table.
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
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'wallets', v_wallets);
end;
$$;

-- A number or JSON null.
create or replace function echovalue._json_num(p_value bigint) returns text
language sql immutable as $$
    select coalesce(p_value::text, 'null')
$$;

-- The limits of a token as a compact JSON object; null members mean "no limit".
create or replace function echovalue._key_limits_json(p_token echovalue.tokens) returns text
language sql immutable as $$
    select pg_catalog.format('{"per_request":%s,"daily":%s,"monthly":%s}',
        echovalue._json_num(p_token.limit_per_request), echovalue._json_num(p_token.limit_daily),
        echovalue._json_num(p_token.limit_monthly))
$$;

-- One token as listed: never the token itself, only its recognisable prefix. A root token has
-- no limits and no usage counters (its spending is the wallet's, see the logs).
create or replace function echovalue._key_json(p_token echovalue.tokens) returns text
language sql stable as $$
    select pg_catalog.format(
        '{"id":%s,"label":%s,"prefix":%s,"root":%s,"limits":%s,"usage":%s,"created":%s,"last_used":%s,"revoked":%s}',
        echovalue._json_str(p_token.public_id::text), echovalue._json_str(p_token.label),
        echovalue._json_str(p_token.prefix), pg_catalog.to_json(p_token.is_root),
        echovalue._key_limits_json(p_token),
        case when p_token.is_root then 'null' else pg_catalog.format('{"daily":%s,"monthly":%s}',
            echovalue._token_usage(p_token.wallet_id, p_token.id, interval '24 hours'),
            echovalue._token_usage(p_token.wallet_id, p_token.id, interval '30 days')) end,
        echovalue._json_str(echovalue._ts(p_token.created)),
        echovalue._json_str(echovalue._ts(p_token.last_used)),
        echovalue._json_str(echovalue._ts(p_token.revoked)))
$$;

-- Why one limit of a token spec is refused, or NULL: absent, null or an integer 0..10^15.
create or replace function echovalue._key_limit_error(p_name text, p_value jsonb) returns text
language plpgsql immutable as $$
begin
    if p_value is null or pg_catalog.jsonb_typeof(p_value) = 'null' then
        return null;
    end if;
    if pg_catalog.jsonb_typeof(p_value) <> 'number'
       or p_value::numeric <> pg_catalog.trunc(p_value::numeric)
       or p_value::numeric not between 0 and 1e15 then
        return pg_catalog.format(
            'Bad Request: limits.%s must be null or an integer from 0 to 1000000000000000', p_name);
    end if;
    return null;
end;
$$;

-- Why a token spec (the JSON body of POST /token/keys) is refused, or NULL. Unknown fields are
-- refused rather than ignored, so a misspelt limit never silently leaves a token unlimited.
create or replace function echovalue._key_spec_error(p_spec jsonb) returns text
language plpgsql immutable as $$
declare
    v_field text;
    v_label jsonb := p_spec -> 'label';
    v_limits jsonb := p_spec -> 'limits';
begin
    if pg_catalog.jsonb_typeof(p_spec) <> 'object' then
        return 'Bad Request: body must be a JSON object';
    end if;
    for v_field in select pg_catalog.jsonb_object_keys(p_spec) loop
        if v_field not in ('label', 'limits') then
            return pg_catalog.format('Bad Request: unknown field %s (allowed: label, limits)',
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
    if v_limits is null or pg_catalog.jsonb_typeof(v_limits) = 'null' then
        return null;
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

-- The charged 403 for a request that only the wallet's root token may make, or NULL when the
-- paying token is the root one.
create or replace function echovalue._root_only(
    p_wallet bigint, p_operation text, p_method text, p_path text
) returns echovalue.outcome
language plpgsql volatile as $$
begin
    if echovalue._caller_token(p_wallet) is null then
        return null;
    end if;
    return echovalue._fail(p_wallet, p_operation, 'token', p_method, p_path, 403, 'Forbidden');
end;
$$;

-- POST /token/keys: a new token for the caller's wallet, with an optional label and limits.
-- spec is the request body as sent: {"label":…,"limits":{"per_request":…,"daily":…,
-- "monthly":…}}, every field optional; '' counts as {}. The answer is the only time the new
-- token is ever shown.
create or replace function echovalue.token_key_create(
    token text,
    spec text default '{}',
    http_method text default 'POST',
    http_path text default '/token/keys'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(token_key_create.token);
    v_method text := token_key_create.http_method;
    v_path text := token_key_create.http_path;
    v_refusal echovalue.outcome;
    v_spec jsonb;
    v_error text;
    v_max int := echovalue._setting('max_tokens');
    v_paid echovalue.payment;
    v_new text;
    v_row echovalue.tokens;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_wallet, 'token_key_create', v_method, v_path);
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
    perform from echovalue.wallets w where w.id = v_wallet for no key update;
    if v_error is null
       and (select pg_catalog.count(*) from echovalue.tokens t
             where t.wallet_id = v_wallet and t.revoked is null) >= v_max then
        v_error := pg_catalog.format(
            'Bad Request: a wallet may have at most %s live tokens; revoke one first', v_max);
    end if;
    if v_error is not null then
        return echovalue._fail(v_wallet, 'token_key_create', 'token', v_method, v_path, 400, v_error);
    end if;
    v_paid := echovalue._pay(v_wallet, 'token_key_create', 'token', v_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_new := echovalue._token_generate();
    insert into echovalue.tokens as t
        (wallet_id, hash, label, prefix, limit_per_request, limit_daily, limit_monthly)
    values (v_wallet, echovalue._token_hash(v_new),
            v_spec ->> 'label', echovalue._token_prefix(v_new),
            (v_spec #>> '{limits,per_request}')::numeric::bigint,
            (v_spec #>> '{limits,daily}')::numeric::bigint,
            (v_spec #>> '{limits,monthly}')::numeric::bigint)
    returning * into v_row;
    return echovalue._finish(v_wallet, 'token', v_method, v_path, 200,
        pg_catalog.format('{"id":%s,"token":%s,"label":%s,"limits":%s,"created":%s}',
            echovalue._json_str(v_row.public_id::text), echovalue._json_str(v_new),
            echovalue._json_str(v_row.label), echovalue._key_limits_json(v_row),
            echovalue._json_str(echovalue._ts(v_row.created))),
        v_paid.cost, v_paid.balance, 'application/json');
end;
$$;

-- GET /token/keys: {"keys":[…]} with every token of the wallet, oldest first, revoked ones
-- until maintenance deletes them (echovalue.revoked_token_days).
create or replace function echovalue.token_key_list(
    token text,
    http_method text default 'GET',
    http_path text default '/token/keys'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(token_key_list.token);
    v_method text := token_key_list.http_method;
    v_path text := token_key_list.http_path;
    v_refusal echovalue.outcome;
    v_paid echovalue.payment;
    v_body text;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_wallet, 'token_key_list', v_method, v_path);
    if v_refusal.status is not null then
        return v_refusal;
    end if;
    v_paid := echovalue._pay(v_wallet, 'token_key_list', 'token', v_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select '{"keys":[' || coalesce(pg_catalog.string_agg(echovalue._key_json(t), ','
                                                         order by t.created, t.id), '') || ']}'
      into v_body
      from echovalue.tokens t where t.wallet_id = v_wallet;
    return echovalue._finish(v_wallet, 'token', v_method, v_path, 200, v_body,
                             v_paid.cost, v_paid.balance, 'application/json');
end;
$$;

-- DELETE /token/keys/{id}: revokes the token for good; its very next request gets 401 (no
-- cache: every request looks the token up). Revoking a revoked token is a no-op `OK`; an
-- unknown id, or one of another wallet, is 404; the root token cannot be revoked (400).
create or replace function echovalue.token_key_revoke(
    token text,
    key_id text,
    http_method text default 'DELETE',
    http_path text default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(token_key_revoke.token);
    v_method text := token_key_revoke.http_method;
    v_path text := coalesce(token_key_revoke.http_path, '/token/keys/' || token_key_revoke.key_id);
    v_refusal echovalue.outcome;
    v_paid echovalue.payment;
    v_target echovalue.tokens;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_refusal := echovalue._root_only(v_wallet, 'token_key_revoke', v_method, v_path);
    if v_refusal.status is not null then
        return v_refusal;
    end if;
    v_paid := echovalue._pay(v_wallet, 'token_key_revoke', 'token', v_method, v_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    if token_key_revoke.key_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
        select * into v_target from echovalue.tokens t
         where t.wallet_id = v_wallet and t.public_id = token_key_revoke.key_id::uuid
           for update;
    end if;
    if v_target.id is null then
        return echovalue._finish(v_wallet, 'token', v_method, v_path, 404, 'Not Found',
                                 v_paid.cost, v_paid.balance);
    end if;
    if v_target.is_root then
        return echovalue._finish(v_wallet, 'token', v_method, v_path, 400,
                                 'Bad Request: the root token cannot be revoked',
                                 v_paid.cost, v_paid.balance);
    end if;
    update echovalue.tokens t set revoked = coalesce(t.revoked, pg_catalog.now())
     where t.id = v_target.id;
    return echovalue._finish(v_wallet, 'token', v_method, v_path, 200, 'OK',
                             v_paid.cost, v_paid.balance);
end;
$$;

-- POST /stripe/webhook after the proxy verified Stripe-Signature: stores the event once
-- (unique by its id) and wakes the workers. 200 `{"received":true,"duplicate":…}` for a new
-- or an already recorded event; 400 when the payload is not an event with an id and a type.
create or replace function echovalue.stripe_event_record(
    payload text,
    http_method text default 'POST',
    http_path text default '/stripe/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_event jsonb;
    v_object jsonb;
    v_new boolean;
begin
    begin
        v_event := stripe_event_record.payload::jsonb;
    exception when invalid_text_representation or untranslatable_character
                   or character_not_in_repertoire then
        v_event := null;
    end;
    if v_event is null or pg_catalog.jsonb_typeof(v_event) <> 'object' then
        return echovalue._outcome(400, 'Bad Request: body must be a Stripe event (a JSON object)', null, null);
    end if;
    if pg_catalog.jsonb_typeof(v_event -> 'id') is distinct from 'string'
       or pg_catalog.jsonb_typeof(v_event -> 'type') is distinct from 'string'
       or pg_catalog.char_length(v_event ->> 'id') not between 1 and 255
       or pg_catalog.char_length(v_event ->> 'type') not between 1 and 255 then
        return echovalue._outcome(400, 'Bad Request: a Stripe event needs an id and a type of 1 to 255 characters', null, null);
    end if;
    v_object := v_event -> 'data' -> 'object';
    if pg_catalog.jsonb_typeof(v_object) is distinct from 'object' then
        v_object := '{}';
    end if;
    insert into echovalue.stripe_events as e
        (id, type, session_id, wallet_hash, payment_link, payment_status, payload,
         http_method, http_path)
    values
        (v_event ->> 'id', v_event ->> 'type', v_object ->> 'id',
         v_object ->> 'client_reference_id',
         -- a string id, or the object when the event was sent with payment_link expanded
         coalesce(v_object -> 'payment_link' ->> 'id', v_object ->> 'payment_link'),
         v_object ->> 'payment_status', v_event,
         stripe_event_record.http_method, stripe_event_record.http_path)
    on conflict (id) do nothing
    returning true into v_new;
    if v_new then
        -- only a wake-up, sent at commit; the table is the truth
        perform pg_catalog.pg_notify('echovalue_stripe', v_event ->> 'id');
    end if;
    return echovalue._outcome(200,
        '{"received":true,"duplicate":' || case when v_new then 'false' else 'true' end || '}',
        null, null, 'application/json');
end;
$$;

-- Decides one claimed event and, when it pays for a tier, credits the wallet and logs it.
-- Runs inside stripe_event_apply's transaction; the caller marks the event with the result.
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
    -- cost is what the request charged: nothing; the new balance shows the credits granted
    perform echovalue._log(wallet_id, 'recharge', coalesce(p_event.http_method, 'POST'),
                           coalesce(p_event.http_path, '/stripe/webhook'), 200, null, 0, v_balance);
    state := 'applied';
end;
$$;

-- The worker's call: claims the oldest pending event (FOR UPDATE SKIP LOCKED, so workers in
-- parallel never take the same one), applies it and marks it, all in the caller's one
-- transaction. One row (event_id, state, credits) per event decided; no row when none is
-- pending. An error while applying marks the event `failed` instead of blocking the queue.
create or replace function echovalue.stripe_event_apply()
returns table (event_id text, state text, credits bigint)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_event echovalue.stripe_events;
    v_state text;
    v_detail text;
    v_wallet bigint;
    v_credits bigint;
begin
    select e.* into v_event
      from echovalue.stripe_events e
     where e.state = 'pending'
     order by e.received, e.id
     limit 1
       for update skip locked;
    if v_event.id is null then
        return;
    end if;
    begin
        select c.state, c.detail, c.wallet_id, c.credits
          into v_state, v_detail, v_wallet, v_credits
          from echovalue._stripe_event_credit(v_event) c;
    exception
        when unique_violation then
            -- another event of the same session was applied meanwhile by another worker
            v_state := 'ignored';
            v_detail := 'checkout session already credited';
            v_wallet := null;
            v_credits := null;
        when others then
            v_state := 'failed';
            v_detail := sqlstate || ': ' || sqlerrm;
            v_wallet := null;
            v_credits := null;
    end;
    update echovalue.stripe_events e
       set state = v_state, detail = v_detail, wallet_id = v_wallet, credits = v_credits,
           applied = pg_catalog.now()
     where e.id = v_event.id;
    event_id := v_event.id;
    state := v_state;
    credits := v_credits;
    return next;
end;
$$;

-- Operator: puts an event that could not be applied (unknown_wallet, unknown_tier, failed)
-- back in the queue, e.g. after setting the missing stripe_link_id. Returns 'pending'.
create or replace function echovalue.stripe_event_retry(event_id text) returns text
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_state text;
begin
    select e.state into v_state from echovalue.stripe_events e where e.id = stripe_event_retry.event_id
       for update;
    if v_state is null then
        raise exception 'echovalue: no Stripe event %', stripe_event_retry.event_id
            using errcode = 'no_data_found';
    end if;
    if v_state not in ('unknown_wallet', 'unknown_tier', 'failed') then
        raise exception 'echovalue: Stripe event % is %; only unknown_wallet, unknown_tier or failed events can be retried',
            stripe_event_retry.event_id, v_state
            using errcode = 'invalid_parameter_value';
    end if;
    update echovalue.stripe_events e
       set state = 'pending', detail = null, applied = null
     where e.id = stripe_event_retry.event_id;
    perform pg_catalog.pg_notify('echovalue_stripe', stripe_event_retry.event_id);
    return 'pending';
end;
$$;

-- A text setting `echovalue.<name>` (see _setting for why the library is called first).
create or replace function echovalue._setting_text(p_name text) returns text
language plpgsql stable as $$
begin
    perform echovalue.token_format_ok('');
    return pg_catalog.current_setting('echovalue.' || p_name);
end;
$$;

-- What kind of address this is: 'public', or why it is not ('loopback', 'private', …).
-- The most specific listed network wins; an IPv6 address outside 2000::/3 is 'reserved'.
create or replace function echovalue.address_classify(addr inet) returns text
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

-- Why a webhook URL is refused, or NULL. HTTPS with a public host only; with
-- echovalue.webhook_allow_insecure also http and loopback. No DNS lookup: a name is judged
-- by its form, an address literal by address_classify (delivery re-checks what names resolve to).
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
    if v_class = 'public' or (v_class = 'loopback' and v_insecure) then
        return null;
    end if;
    return pg_catalog.format('Bad Request: url host is not a public address (%s)', v_class);
end;
$$;

-- Why custom webhook headers are refused, or NULL: an object of at most
-- echovalue.webhook_max_headers string values, names are HTTP tokens, unique ignoring case,
-- and none that the delivery itself sets (framing, hop-by-hop, content type, signature).
create or replace function echovalue._webhook_headers_error(p_headers jsonb) returns text
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
    values (p_wallet,
            pg_catalog.encode(echovalue._random_bytes(12), 'hex'),
            'whsec_' || pg_catalog.encode(echovalue._random_bytes(32), 'base64'))
    on conflict (wallet_id) do nothing;
    select * into strict v_row from echovalue.mailboxes m where m.wallet_id = p_wallet;
    return v_row;
end;
$$;

-- The inbound address of a mailbox: <mailbox>@<echovalue.mail_domain>.
create or replace function echovalue._mailbox_address(p_mailbox text) returns text
language sql stable as $$
    select p_mailbox || '@' || pg_catalog.lower(echovalue._setting_text('mail_domain'))
$$;

-- Why a POST /webhook body is refused, or NULL; p_config gets the parsed object.
create or replace function echovalue._webhook_body_error(p_body text, out p_error text, out p_config jsonb)
language plpgsql stable as $$
declare
    v_unknown text;
begin
    begin
        p_config := p_body::jsonb;
    exception when data_exception or statement_too_complex then
        p_error := 'Bad Request: body must be a JSON object';
        return;
    end;
    if p_config is null or pg_catalog.jsonb_typeof(p_config) <> 'object' then
        p_error := 'Bad Request: body must be a JSON object';
        return;
    end if;
    select k into v_unknown from pg_catalog.jsonb_object_keys(p_config) k
     where k not in ('url', 'headers') order by k limit 1;
    if v_unknown is not null then
        p_error := pg_catalog.format('Bad Request: unknown field %s (expected url, headers)',
                                     pg_catalog.left(v_unknown, 64));
        return;
    end if;
    if not p_config ? 'url' or pg_catalog.jsonb_typeof(p_config -> 'url') = 'null' then
        p_error := 'Bad Request: url is required';
    elsif pg_catalog.jsonb_typeof(p_config -> 'url') <> 'string' then
        p_error := 'Bad Request: url must be a string';
    else
        p_error := coalesce(echovalue._webhook_url_error(p_config ->> 'url'),
                            echovalue._webhook_headers_error(p_config -> 'headers'));
    end if;
end;
$$;

-- POST /webhook {"url":…,"headers":{…}}: creates or replaces the wallet's webhook; `OK`.
create or replace function echovalue.webhook_set(
    token text,
    body text,
    http_method text default 'POST',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(webhook_set.token);
    v_error text;
    v_config jsonb;
    v_paid echovalue.payment;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    select e.p_error, e.p_config into v_error, v_config from echovalue._webhook_body_error(webhook_set.body) e;
    if v_error is not null then
        return echovalue._fail(v_wallet, 'webhook_set', 'webhook', webhook_set.http_method,
                               webhook_set.http_path, 400, v_error);
    end if;
    v_paid := echovalue._pay(v_wallet, 'webhook_set',
                             'webhook', webhook_set.http_method, webhook_set.http_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    perform echovalue._mailbox_ensure(v_wallet);
    insert into echovalue.webhooks as h (wallet_id, url, headers)
    values (v_wallet, v_config ->> 'url',
            case when pg_catalog.jsonb_typeof(v_config -> 'headers') = 'object'
                 then v_config -> 'headers' else '{}'::jsonb end)
    on conflict (wallet_id)
    do update set url = excluded.url, headers = excluded.headers, updated = pg_catalog.now();
    return echovalue._finish(v_wallet, 'webhook', webhook_set.http_method, webhook_set.http_path,
                             200, 'OK', v_paid.cost, v_paid.balance);
end;
$$;

-- GET /webhook: {"webhook":url,"headers":{name:"<redacted>"},"email":…,"hash":…};
-- without a webhook only email and hash.
create or replace function echovalue.webhook_get(
    token text,
    http_method text default 'GET',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(webhook_get.token);
    v_paid echovalue.payment;
    v_mailbox echovalue.mailboxes;
    v_hash text;
    v_hook echovalue.webhooks;
    v_email text;
    v_body text;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_wallet, 'webhook_get',
                             'webhook', webhook_get.http_method, webhook_get.http_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_mailbox := echovalue._mailbox_ensure(v_wallet);
    v_email := echovalue._json_str(echovalue._mailbox_address(v_mailbox.mailbox));
    select echovalue._json_str(w.hash) into v_hash from echovalue.wallets w where w.id = v_wallet;
    select * into v_hook from echovalue.webhooks h where h.wallet_id = v_wallet;
    if found then
        v_body := pg_catalog.format('{"webhook":%s,"headers":{%s},"email":%s,"hash":%s,"secret":%s}',
            echovalue._json_str(v_hook.url),
            (select coalesce(pg_catalog.string_agg(echovalue._json_str(e.key) || ':"<redacted>"', ',' order by e.key), '')
               from pg_catalog.jsonb_object_keys(v_hook.headers) e(key)),
            v_email, v_hash, echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s}', v_email, v_hash);
    end if;
    return echovalue._finish(v_wallet, 'webhook', webhook_get.http_method, webhook_get.http_path,
                             200, v_body, v_paid.cost, v_paid.balance, 'application/json');
end;
$$;

-- DELETE /webhook: `OK`; 404 `Webhook Not Found` when the wallet has none.
create or replace function echovalue.webhook_delete(
    token text,
    http_method text default 'DELETE',
    http_path text default '/webhook'
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint := echovalue._wallet_resolve(webhook_delete.token);
    v_paid echovalue.payment;
begin
    if v_wallet is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_wallet, 'webhook_delete',
                             'webhook', webhook_delete.http_method, webhook_delete.http_path);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    delete from echovalue.webhooks h where h.wallet_id = v_wallet;
    if not found then
        return echovalue._finish(v_wallet, 'webhook', webhook_delete.http_method, webhook_delete.http_path,
                                 404, 'Webhook Not Found', v_paid.cost, v_paid.balance);
    end if;
    return echovalue._finish(v_wallet, 'webhook', webhook_delete.http_method, webhook_delete.http_path,
                             200, 'OK', v_paid.cost, v_paid.balance);
end;
$$;

-- The wallet an envelope recipient names, or the SMTP refusal. A recipient is
-- <mailbox>@<mail domain> or <token>@<mail domain>, compared ignoring case (mailbox ids and
-- tokens are lowercase); the wallet must have a webhook.
create or replace function echovalue._mail_route(
    p_recipient text, out o_wallet bigint, out o_code int, out o_message text
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
    if echovalue.token_format_ok(v_local) then
        o_wallet := echovalue._wallet_resolve(v_local);
    else
        select m.wallet_id into o_wallet from echovalue.mailboxes m where m.mailbox = v_local;
    end if;
    if o_wallet is null then
        o_code := 550;
        o_message := '5.1.1 no such mailbox';
    elsif not exists (select 1 from echovalue.webhooks h where h.wallet_id = o_wallet) then
        o_wallet := null;
        o_code := 550;
        o_message := '5.1.1 mailbox has no webhook configured';
    end if;
end;
$$;

-- RCPT TO: 250 when the recipient's wallet has a webhook and can pay for one email; 550 for
-- an unknown mailbox, another domain or no webhook; 452 (try later) when it cannot pay.
-- Nothing is charged or logged here.
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
                    where w.id = v_route.o_wallet and w.balance >= echovalue._price('email')) then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;
    return row(250, '2.1.5 recipient ok')::echovalue.smtp_reply;
end;
$$;

-- After DATA, for one recipient: charges `email`, stores the message and its attachments,
-- queues its delivery, logs it (`endpoint` email, method SMTP, path = the mailbox address,
-- never a token) and NOTIFYs echovalue_mail with the delivery id. 250 only when all of it is
-- done; the routing refusals of mail_rcpt_check otherwise, and 452 (nothing stored, logged
-- as a 402) when the wallet ran out of credits since RCPT.
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
    v_path text;
    v_cost int;
    v_balance bigint;
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
    v_path := echovalue._mailbox_address((echovalue._mailbox_ensure(v_route.o_wallet)).mailbox);
    v_cost := echovalue._price('email');
    v_balance := echovalue._charge(v_route.o_wallet, v_cost);
    if v_balance is null then
        perform echovalue._insufficient(v_route.o_wallet, 'email', 'SMTP', v_path);
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;

    insert into echovalue.messages as m
        (wallet_id, external_id, from_email, from_name, subject, text_body, html_body, headers, size_bytes)
    values
        (v_route.o_wallet, mail_receive.message_id, mail_receive.from_email, mail_receive.from_name,
         mail_receive.subject, mail_receive.text_body, mail_receive.html_body,
         coalesce(mail_receive.headers, '{}'::jsonb), mail_receive.size_bytes)
    returning m.id into v_message;
    insert into echovalue.attachments
        (wallet_id, message_id, position, filename, content_type, size, content)
    select v_route.o_wallet, v_message, a.pos, a.filename,
           coalesce(a.content_type, 'application/octet-stream'), pg_catalog.octet_length(a.content), a.content
      from unnest(mail_receive.attachment_filenames, mail_receive.attachment_content_types,
                  mail_receive.attachment_contents) with ordinality as a(filename, content_type, content, pos);
    insert into echovalue.deliveries as d (wallet_id, message_id)
    values (v_route.o_wallet, v_message)
    returning d.id into v_delivery;
    perform echovalue._log(v_route.o_wallet, 'email', 'SMTP', v_path, 200, null, v_cost, v_balance);
    perform pg_catalog.pg_notify('echovalue_mail', v_delivery::text);
    return row(250, '2.0.0 queued as ' || v_message)::echovalue.smtp_reply;
end;
$$;

-- The signature of a download URL: hex HMAC over "<attachment id>.<expiry unix seconds>".
create or replace function echovalue._attachment_sig(p_attachment bigint, p_expires bigint) returns text
language sql stable as $$
    select pg_catalog.encode(echovalue._hmac_sha256(k.key,
               pg_catalog.convert_to(p_attachment::text || '.' || p_expires::text, 'UTF8')), 'hex')
      from echovalue.installation_keys k
     where k.name = 'attachment_url'
$$;

-- The attachments of a message as the payload's JSON array, each with a download URL on the
-- proxy (echovalue.public_url) valid echovalue.attachment_url_seconds from now.
create or replace function echovalue._attachments_json(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
declare
    v_expires timestamptz := pg_catalog.date_trunc('second', pg_catalog.now())
        + pg_catalog.make_interval(secs => echovalue._setting('attachment_url_seconds'));
    v_epoch bigint := pg_catalog.date_part('epoch', v_expires)::bigint;
    v_base text := pg_catalog.rtrim(echovalue._setting_text('public_url'), '/');
begin
    return '[' || coalesce((
        select pg_catalog.string_agg(pg_catalog.format(
                   '{"filename":%s,"contentType":%s,"size":%s,"downloadUrl":%s,"downloadUrlExpiresAt":%s}',
                   echovalue._json_str(a.filename), echovalue._json_str(a.content_type), a.size,
                   echovalue._json_str(pg_catalog.format('%s/attachments/%s?expires=%s&sig=%s', v_base, a.id,
                                                         v_epoch, echovalue._attachment_sig(a.id, v_epoch))),
                   echovalue._json_str(echovalue._ts(v_expires))), ',' order by a.position)
          from echovalue.attachments a
         where a.wallet_id = p_wallet and a.message_id = p_message), '') || ']';
end;
$$;

-- The webhook body of a message (seed 002): compact JSON, keys in the documented order.
create or replace function echovalue._delivery_payload(p_wallet bigint, p_message bigint) returns text
language sql stable as $$
    select pg_catalog.format(
               '{"externalMessageId":%s,"receivedAt":%s,"from":{"email":%s,"name":%s},"to":{"hash":%s},'
               '"subject":%s,"text":%s,"html":%s,"headers":%s,"attachments":%s}',
               echovalue._json_str(m.external_id), echovalue._json_str(echovalue._ts(m.received_at)),
               echovalue._json_str(m.from_email), echovalue._json_str(m.from_name),
               echovalue._json_str(w.hash), echovalue._json_str(m.subject),
               echovalue._json_str(m.text_body), echovalue._json_str(m.html_body),
               m.headers::text, echovalue._attachments_json(m.wallet_id, m.id))
      from echovalue.messages m
      join echovalue.wallets w on w.id = m.wallet_id
     where m.wallet_id = p_wallet and m.id = p_message
$$;

-- One webhook-delivery log entry: free (the `email` charge paid for delivery), the current
-- balance, path = the delivery's webhook-id so the user can match it with what arrived.
create or replace function echovalue._delivery_log(
    p_wallet bigint, p_webhook_id text, p_status int, p_error text
) returns void
language sql volatile as $$
    select echovalue._log(p_wallet, 'webhook-delivery', 'POST', p_webhook_id, p_status, p_error, 0, w.balance)
      from echovalue.wallets w
     where w.id = p_wallet
$$;

-- Claims up to `batch` due deliveries for `lease_seconds` (the attempt must be recorded
-- before then, or another dispatcher will claim it again) and returns what each POST needs:
-- the delivery id and attempt number (for delivery_record), the stable webhook-id, the URL,
-- the user's headers, the wallet's signing secret and the JSON body. A claimed delivery whose
-- wallet no longer has a webhook fails for good instead (logged); when a whole batch was such
-- rows it claims the next one, so an empty result means nothing this caller may send is due.
create or replace function echovalue.delivery_claim(batch int default 50, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, webhook_id text, url text, headers jsonb, secret text, payload text)
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
            webhook_id := v_row.webhook_id;
            payload := echovalue._delivery_payload(v_row.wallet_id, v_row.message_id);
            v_returned := v_returned + 1;
            return next;
        end loop;
        exit when v_claimed = 0 or v_returned > 0;
    end loop;
end;
$$;

-- Records one attempt of a claimed delivery and logs it (`endpoint` webhook-delivery,
-- status_code = the HTTP status, 0 when there was no response, error = why it failed).
-- `outcome`: 'delivered', 'retry' (again in retry_seconds) or 'failed' (for good).
-- A success always counts; a retry or failure from an attempt that is no longer the latest
-- (its lease ran out and another dispatcher claimed the row) is only logged. Returns whether
-- the row changed.
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
    v_error text := pg_catalog.left(delivery_record.error, 500);
    v_changed boolean := false;
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    update echovalue.deliveries d
       set state = case delivery_record.outcome when 'retry' then 'pending' else delivery_record.outcome end,
           next_attempt_at = case when delivery_record.outcome = 'retry'
               then pg_catalog.now() + pg_catalog.make_interval(secs => delivery_record.retry_seconds)
               else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt)
    returning d.wallet_id, d.webhook_id into v_wallet, v_webhook_id;
    v_changed := found;
    if not v_changed then
        select d.wallet_id, d.webhook_id into v_wallet, v_webhook_id
          from echovalue.deliveries d where d.id = delivery_record.delivery_id;
        if not found then
            return false;   -- purged with its wallet or message
        end if;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end);
    return v_changed;
end;
$$;

-- GET /attachments/{id}?expires=…&sig=…: the attachment when the signature matches and the
-- expiry has not passed (403 otherwise, checked before any lookup so a bad URL learns
-- nothing), 404 when it is gone (purged). Free and unlogged: the URL is the credential.
create or replace function echovalue.attachment_get(attachment_id text, expires text, sig text)
returns echovalue.attachment_download
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_id bigint;
    v_expires bigint;
    v_row echovalue.attachments;
begin
    if attachment_get.attachment_id !~ '^[1-9][0-9]{0,17}$' then
        return row(404, null, null, null, 'Not Found')::echovalue.attachment_download;
    end if;
    if coalesce(attachment_get.expires, '') !~ '^[1-9][0-9]{0,11}$'
       or coalesce(attachment_get.sig, '') !~ '^[0-9a-f]{64}$' then
        return row(403, null, null, null, 'Forbidden')::echovalue.attachment_download;
    end if;
    v_id := attachment_get.attachment_id::bigint;
    v_expires := attachment_get.expires::bigint;
    if echovalue._attachment_sig(v_id, v_expires) is distinct from attachment_get.sig then
        return row(403, null, null, null, 'Forbidden')::echovalue.attachment_download;
    end if;
    if v_expires < pg_catalog.date_part('epoch', pg_catalog.now()) then
        return row(403, null, null, null, 'Forbidden: link expired')::echovalue.attachment_download;
    end if;
    select * into v_row from echovalue.attachments a where a.id = v_id;
    if not found then
        return row(404, null, null, null, 'Not Found')::echovalue.attachment_download;
    end if;
    return row(200, v_row.content_type, v_row.filename, v_row.content, null)::echovalue.attachment_download;
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
    echovalue.delivery_claim(int, int),
    echovalue.delivery_record(bigint, int, text, int, text, int),
    echovalue.stripe_event_apply()
to echovalue_worker;
