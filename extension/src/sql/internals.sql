-- Internal helpers shared by the API functions. Names start with `_`; PUBLIC and
-- echovalue_api cannot execute them (grants.sql). They run inside the security definer API
-- functions, and every reference is schema-qualified.

-- echovalue._setting(name), the integer setting `echovalue.<name>`, is a Rust function
-- (gucs.rs).

-- A timestamp as RFC 3339 in UTC with microseconds and `Z`.
create function echovalue._ts(p_at timestamptz) returns text
language sql stable as $$
    select pg_catalog.to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- A text as a JSON string literal (`null` for NULL).
create function echovalue._json_str(p_text text) returns text
language sql immutable as $$
    select coalesce(pg_catalog.to_json(p_text)::text, 'null')
$$;

-- Builds an outcome row; plain text unless told otherwise.
create function echovalue._outcome(
    p_status int, p_body text, p_cost int, p_balance bigint,
    p_content_type text default 'text/plain; charset=utf-8', p_headers jsonb default null
) returns echovalue.outcome
language sql immutable as $$
    select row(p_status, p_body, p_content_type, p_cost, p_balance, p_headers)::echovalue.outcome
$$;

-- The 401 outcome: no wallet, so no cost, no balance, no log.
create function echovalue._unauthorized() returns echovalue.outcome
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
create function echovalue._wallet_resolve(p_token text) returns bigint
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

-- echovalue._caller_token(wallet), the non-root token paying for this transaction's charges
-- of that wallet or NULL (root token, or no token: email, recharge), is a Rust function
-- (gucs.rs).

-- Credits a token spent in the rolling window ending now: whole hourly buckets, counting the
-- oldest hour in full, so a spend leaves the window between p_window and p_window + 1 hour
-- after it was made (a limit is never overrun, at worst it frees up to an hour late).
-- (plpgsql, so its plan is kept for the session, not made again in every transaction)
create function echovalue._token_usage(p_wallet bigint, p_token bigint, p_window interval)
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
create function echovalue._limits_allow(p_wallet bigint, p_token bigint, p_cost int)
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
create function echovalue._limit_refusal(
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
create function echovalue._limit_headers(p_wallet bigint) returns jsonb
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
create function echovalue._token_prefix(p_token text) returns text
language sql immutable strict parallel safe as $$
    select pg_catalog.left(p_token, 19) || '...' || pg_catalog.right(p_token, 4)
$$;

-- Price of an operation in credits; an unknown operation is a caller bug.
create function echovalue._price(p_operation text) returns int
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
create function echovalue._last_used(p_last_used timestamptz) returns timestamptz
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
create function echovalue._charge(p_wallet bigint, p_cost int) returns bigint
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
create function echovalue._log(
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
create function echovalue._insufficient(
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
create function echovalue._finish(
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
create function echovalue._pay(
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
create function echovalue._fail(
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
create function echovalue._endpoint_of(p_operation text) returns text
language sql immutable as $$
    select case
        when p_operation like 'kv\_%' then 'kv'
        when p_operation like 'webhook\_%' then 'webhook'
        when p_operation = 'email' then 'email'
        else 'token'
    end
$$;

-- echovalue._name_error(what, name), why a group or key name is refused or NULL, is a Rust
-- function (names.rs).

-- A ttl parameter in seconds: NULL or '0' mean the maximum; NULL result when invalid.
-- At most 9 digits are cast, so huge inputs cannot overflow (the maximum is below 10^9).
create function echovalue._ttl_seconds(p_ttl text) returns int
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
