-- Key-value API. Names and values are validated here (the proxy only decodes the path);
-- a rejected request on a known wallet is charged and logged like any other. Every charge
-- names the group, so a token limited to some groups gets 403 on any other (_pay).
-- Parameters share names with kv columns, so columns are always alias-qualified.

-- Why a kv_set is refused, or NULL; checks group, key, value, then ttl.
create function echovalue._kv_set_error(p_grp text, p_key text, p_value text, p_ttl text)
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
create function echovalue.kv_set(
    token text,
    grp text,
    key text,
    value text,
    ttl text default null,
    http_method text default 'POST',
    http_path text default null,
    wallet bigint default null
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

-- GET /kv/{grp}/{key}: the value; 404 `Key Not Found` when missing or expired.
create function echovalue.kv_get(
    token text,
    grp text,
    key text,
    http_method text default 'GET',
    http_path text default null,
    wallet bigint default null
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

-- DELETE /kv/{grp}/{key}: `OK`; 404 `Key Not Found` when missing or already expired.
create function echovalue.kv_delete(
    token text,
    grp text,
    key text,
    http_method text default 'DELETE',
    http_path text default null,
    wallet bigint default null
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
