-- Logs API: the wallet's newest request log entries, 1 logs_entry price per entry returned.

-- One log entry as a JSON object; `error` is left out when NULL.
create function echovalue._log_json(p_log echovalue.logs) returns text
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
create function echovalue._logs_n(p_n text) returns int
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

-- Why a logs type filter is refused, or NULL (no filter, or an endpoint of SPEC §6 and §14).
create function echovalue._logs_type_error(p_type text) returns text
language sql immutable as $$
    select case when p_type is not null and p_type not in
                    ('kv', 'token', 'webhook', 'webhook-delivery', 'email', 'recharge', 'settings')
        then 'Bad Request: type must be one of kv, token, webhook, webhook-delivery, email, recharge, settings'
    end
$$;

-- A wallet's live log entries, newest first, at most p_limit; only those of endpoint p_type
-- when it is given. One branch runs, each on its own index (the primary key, or
-- logs_endpoint_idx), so a page reads O(p_limit) entries however rare the type is.
create function echovalue._logs_newest(p_wallet bigint, p_type text, p_limit int)
returns setof echovalue.logs
-- (plpgsql, not SQL: Citus plans a SQL function's query on a distributed table only without
-- parameters)
language plpgsql stable as $$
begin
    return query
    (select * from echovalue.logs l
      where p_type is null and l.wallet_id = p_wallet and l.expires_at > pg_catalog.now()
      order by l.created desc, l.id desc limit p_limit)
    union all
    (select * from echovalue.logs l
      where p_type is not null and l.wallet_id = p_wallet and l.endpoint = p_type
        and l.expires_at > pg_catalog.now()
      order by l.created desc, l.id desc limit p_limit);
end;
$$;

-- GET /token/logs?n=&type=: {"logs":[newest first],"n":K} with K = min(n, entries kept),
-- only those whose endpoint is `type` when it is given; 402 when the wallet cannot pay for
-- all K. The request itself is logged after.
create function echovalue.logs_get(
    token text,
    n text default null,
    http_method text default 'GET',
    http_path text default '/token/logs',
    -- last, after the common arguments, so callers of 0.4.0's positional form still work
    type text default null,
    wallet bigint default null
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
    if echovalue._logs_type_error(logs_get.type) is not null then
        return echovalue._fail(v_caller, 'logs_entry', 400, echovalue._logs_type_error(logs_get.type));
    end if;
    select pg_catalog.count(*)::int into v_k
      from echovalue._logs_newest(v_caller.wallet_id, logs_get.type, v_n);
    v_paid := echovalue._pay(v_caller, 'logs_entry', p_units => v_k);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- the wallet row is locked by the charge, so no entry of this wallet appears meanwhile
    select coalesce(pg_catalog.string_agg(echovalue._log_json(l), ',' order by l.created desc, l.id desc), '')
      into v_entries
      from echovalue._logs_newest(v_caller.wallet_id, logs_get.type, v_k) as l;
    return echovalue._finish(v_caller, v_paid, 200, '{"logs":[' || v_entries || '],"n":' || v_k || '}',
                             'application/json');
end;
$$;
