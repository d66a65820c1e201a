-- Spending limits of a token (SPEC section 9): its usage in the rolling windows, the 402 a
-- limit answers with, and the x-limit-* headers. _pay (internals.sql) asks them for a caller
-- whose token has limits; _finish and the refusals add the headers.

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

-- Why one rolling-window limit (p_max credits in p_window; NULL = none) refuses p_cost more
-- credits (the 402 body), or NULL.
create function echovalue._window_refusal(
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

-- Why the caller's limits refuse p_cost more credits (the 402 body), or NULL when they allow
-- it: the per-request limit first, then the daily and the monthly one.
create function echovalue._limits_refusal(p_caller echovalue.caller, p_cost int) returns text
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

-- x-limit-daily-remaining / x-limit-monthly-remaining for a caller with those limits, so
-- clients need no extra call; NULL for root tokens and tokens without them.
create function echovalue._limit_headers(p_caller echovalue.caller) returns jsonb
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
