-- Internal helpers shared by the API functions. Names start with `_`; PUBLIC and
-- echovalue_api cannot execute them (grants.sql). They run inside the security definer API
-- functions, and every reference is schema-qualified.

-- echovalue._setting(name), the integer setting `echovalue.<name>`, is a Rust function
-- (gucs.rs).

-- Helpers that read or write tables are plpgsql, not SQL: on Citus (SPEC section 18), a
-- SQL function's query on a distributed or reference table cannot be planned with its
-- parameters; a plpgsql statement is planned with their values. For the same reason a CASE,
-- an ON CONFLICT clause or a RETURNING list on those tables holds no now() or other
-- non-immutable call: the value is computed into a variable first.

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

-- The request context. Every API function reads:
--
--     resolve (_wallet_resolve → a caller) → validate (_fail, a charged error) →
--     pay (_pay → a payment, or its refusal) → act → finish (_finish: log and answer)
--
-- The caller and the payment are values passed from step to step; nothing about a request is
-- kept anywhere else, so the calls of several tokens can share one transaction (the proxy's
-- group commit). extension/CONTRACT.md shows the shape with an example.

-- Who calls: the wallet, token and limits of a live token, and the request as it is logged;
-- wallet_id is NULL for a malformed, unknown or revoked token (answer _unauthorized()).
-- The token is looked up in the wallet its key names (token_wallet), so the lookup reads one
-- wallet's rows (on Citus, one shard); a token made before tokens carried the key is found
-- through echovalue.token_legacy, a second lookup only a token unknown to its key's wallet
-- pays.
-- The token row is read, not locked: requests of one wallet meet only on the wallet's row, so
-- a hot token costs one row lock per request, not two. last_used is written at most once a
-- minute per token, which keeps a write (and its WAL) off most requests.
create function echovalue._wallet_resolve(p_token text, p_method text, p_path text)
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
    v_wallet := echovalue.token_wallet(p_token);
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

-- What a listing shows of a token: its first 19 and last 4 characters, enough to tell
-- tokens apart and to match a leaked one, not enough to use it.
create function echovalue._token_prefix(p_token text) returns text
language sql immutable strict parallel safe as $$
    select pg_catalog.left(p_token, 19) || '...' || pg_catalog.right(p_token, 4)
$$;

-- An operation's row of echovalue.prices: its price and the endpoint its log entries name.
-- An unknown operation is a caller bug.
create function echovalue._price(p_operation text) returns echovalue.prices
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

-- A wallet's new last_used: moved only when an hour old. last_used only decides when an
-- unused wallet is deleted (after echovalue.inactive_days), and leaving the indexed column
-- alone lets the charge be a HOT update: no new index entries, less WAL per request.
-- p_now is the caller's now(), a value: inlined into an UPDATE, the CASE holds only immutable
-- operators, which Citus requires of a CASE in a distributed UPDATE.
create function echovalue._last_used(p_last_used timestamptz, p_now timestamptz)
returns timestamptz
language sql immutable as $$
    select case when p_now - p_last_used < interval '1 hour' then p_last_used else p_now end
$$;

-- Whether wallet p_wallet may log one more refusal that charged nothing this minute: at most
-- echovalue.refusal_logs_per_minute (one counter row per wallet, taken under the wallet's
-- row lock, which every refusal already holds). The counter's minute never goes back: a
-- transaction that started in an earlier minute but takes the lock after one of a later minute
-- counts against the later one (resetting there let refusals alternate across a minute's turn,
-- each resetting the other's count, and log without bound).
-- (plpgsql, and the comparison after RETURNING: Citus plans a SQL function's statement on
-- its tables only without parameters, and takes only immutable functions in RETURNING)
create function echovalue._refusal_log_allowed(p_wallet bigint) returns boolean
language plpgsql volatile as $$
declare
    v_entries int;
begin
    insert into echovalue.refusal_log_rate as r (wallet_id, minute, entries)
    values (p_wallet, pg_catalog.date_trunc('minute', pg_catalog.now()), 1)
    on conflict (wallet_id) do update
       set minute = greatest(r.minute, excluded.minute),
           entries = case when r.minute >= excluded.minute then r.entries + 1 else 1 end
    returning r.entries into v_entries;
    return v_entries <= echovalue._setting('refusal_logs_per_minute');
end;
$$;

-- Appends one request log entry; it expires after echovalue.log_retention_days. The path is
-- cut to echovalue.log_max_path_chars and the error to 500 characters. (A refusal that
-- charged nothing is logged only within _refusal_log_allowed: its callers, _insufficient,
-- _fail and _pay's 403, ask first, off the path of a paid request, which is always logged.)
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
         p_method, pg_catalog.left(p_path, echovalue._setting('log_max_path_chars')), p_endpoint,
         p_status, pg_catalog.left(p_error, 500), p_cost, p_balance);
end;
$$;

-- The 402 answer for a request that cannot be paid: nothing charged, logged with cost 0
-- (within echovalue.refusal_logs_per_minute, _refusal_log_allowed).
-- Either the wallet lacks the credits (`Insufficient credits`) or the caller's spending limit
-- refused the charge (p_limit_refusal, the JSON body of _limits_refusal).
create function echovalue._insufficient(
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

-- Pays for p_units of p_operation, within the caller's scopes and spending limits: (endpoint,
-- cost, balance after, NULL), or (endpoint, 0, NULL, the refusal to answer with): the 402 with
-- nothing taken, or, for a token without the operation's scope (echovalue.prices.scope) or
-- outside its KV groups (p_group, for KV operations), the 403 `Forbidden`, charged one unit
-- like any error (SPEC section 15). Refusals are logged. A NULL balance means refused (test
-- that, not `refusal is not null`, which is false for an outcome with a NULL field). Every
-- charge of a wallet goes through here, so no API function can skip a scope (token_new alone
-- takes a priced token_new from the new wallet's starting credits itself).
-- The wallet's row lock serializes the charges of a wallet, so the balance never goes
-- negative; for a limited token the row is locked before its usage is read, so parallel
-- requests of one token cannot overrun a limit either (each reads the usage the previous one
-- committed). A non-root token's spend is added to its hourly usage bucket in the same
-- transaction. A caller without a token (mail to a mailbox address) has no limits. A charge
-- that takes the balance below the wallet's alert threshold queues the alert (settings.sql).
create function echovalue._pay(
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
    v_threshold bigint;
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
            -- (the threshold read by a statement of its own: on Citus an expression holding
            -- a query of the wallet's rows runs whole on its shard, where the alert could not
            -- be queued)
            select w.low_balance_threshold into v_threshold from echovalue.wallets w
             where w.id = p_caller.wallet_id;
            perform echovalue._alert_low_balance(p_caller.wallet_id, v_balance, v_threshold);
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

-- Logs a paid request under its operation's endpoint (the body is the error text when
-- status >= 400) and answers it, with the caller's limit headers.
create function echovalue._finish(
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

-- An error answer after paying: _finish, or, when it cost nothing and the wallet has had
-- echovalue.refusal_logs_per_minute such entries this minute, the same answer unlogged.
create function echovalue._unlogged_or_finish(
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

-- An error on a resolved wallet: charged p_units of the operation's price and logged, or the
-- refusal of _pay (402, or 403 for a caller without the scope or outside the KV group p_group).
create function echovalue._fail(
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

-- Whether the caller's token has scope p_scope (the root token has every scope).
create function echovalue._has_scope(p_caller echovalue.caller, p_scope text) returns boolean
language sql immutable as $$
    select coalesce(p_caller.is_root, false) or coalesce(p_scope = any (p_caller.scopes), false)
$$;

-- The charged 403 for a request that only the wallet's root token may make, or NULL when the
-- caller is the root token.
create function echovalue._root_only(p_caller echovalue.caller, p_operation text)
returns echovalue.outcome
language plpgsql volatile as $$
begin
    if p_caller.is_root then
        return null;
    end if;
    return echovalue._fail(p_caller, p_operation, 403, 'Forbidden');
end;
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
