-- API tokens of a wallet (SPEC sections 9 and 15): made, listed and revoked with the wallet's
-- root token only (any other token gets 403), each with its scopes and KV groups. Each call costs its price (`token_key_create`,
-- `token_key_list`, `token_key_revoke`) and is logged under endpoint `token`. A new token is
-- shown once, in the answer that creates it; only its SHA-256 is kept. Spending limits are
-- enforced by _pay (internals.sql) for every request the token pays for.

-- A number or JSON null.
create function echovalue._json_num(p_value bigint) returns text
language sql immutable as $$
    select coalesce(p_value::text, 'null')
$$;

-- The limits of a token as a compact JSON object; null members mean "no limit".
create function echovalue._key_limits_json(p_token echovalue.tokens) returns text
language sql immutable as $$
    select pg_catalog.format('{"per_request":%s,"daily":%s,"monthly":%s}',
        echovalue._json_num(p_token.limit_per_request), echovalue._json_num(p_token.limit_daily),
        echovalue._json_num(p_token.limit_monthly))
$$;

-- `"scopes":[…],"groups":[…]` of a token (the members, without braces): the root token
-- has every scope; null groups mean every group.
create function echovalue._key_scopes_json(p_token echovalue.tokens) returns text
language sql immutable as $$
    select pg_catalog.format('"scopes":%s,"groups":%s',
        pg_catalog.to_json(coalesce(p_token.scopes, echovalue._scope_names())),
        coalesce(pg_catalog.to_json(p_token.groups)::text, 'null'))
$$;

-- One token as listed: never the token itself, only its recognisable prefix. A root token has
-- no limits and no usage counters (its spending is the wallet's, see the logs).
create function echovalue._key_json(p_token echovalue.tokens) returns text
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

-- Why one limit of a token spec is refused, or NULL: absent, null or an integer 0..10^15.
create function echovalue._key_limit_error(p_name text, p_value jsonb) returns text
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

-- Why the scopes of a token spec are refused, or NULL: absent or null (the defaults), or a
-- list of 1 to 6 of echovalue._scope_names() (repeats are merged).
create function echovalue._key_scopes_error(p_scopes jsonb) returns text
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

-- Why the groups of a token spec are refused, or NULL: absent or null (every group), or a
-- list of 1 to 50 KV group names, each meeting the group name rules (repeats are merged).
create function echovalue._key_groups_error(p_groups jsonb) returns text
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

-- A JSON list of strings as a text[] in the order of p_order (when given: the scopes) or in
-- first-seen order, repeats merged; NULL for absent or null.
create function echovalue._key_list(p_list jsonb, p_order text[] default null) returns text[]
language sql immutable as $$
    select case when pg_catalog.jsonb_typeof(p_list) = 'array' then array(
        select e.value from pg_catalog.jsonb_array_elements_text(p_list) with ordinality e(value, n)
         group by e.value
         order by pg_catalog.min(coalesce(pg_catalog.array_position(p_order, e.value)::bigint, e.n)))
    end
$$;

-- Why a token spec (the JSON body of POST /token/keys) is refused, or NULL. Unknown fields are
-- refused rather than ignored, so a misspelt limit never silently leaves a token unlimited.
create function echovalue._key_spec_error(p_spec jsonb) returns text
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

-- POST /token/keys: a new token for the caller's wallet, with an optional label, limits,
-- scopes and groups. spec is the request body as sent: {"label":…,"limits":{"per_request":…,
-- "daily":…,"monthly":…},"scopes":[…],"groups":[…]}, every field optional (scopes default to
-- echovalue._scope_defaults(), groups to all); '' counts as {}. The answer is the only time the new
-- token is ever shown.
create function echovalue.token_key_create(
    token text,
    spec text default '{}',
    http_method text default 'POST',
    http_path text default '/token/keys',
    wallet bigint default null
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

-- GET /token/keys: {"keys":[…]} with every token of the wallet, oldest first, revoked ones
-- until maintenance deletes them (echovalue.revoked_token_days).
create function echovalue.token_key_list(
    token text,
    http_method text default 'GET',
    http_path text default '/token/keys',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token_key_list.token,
        token_key_list.http_method, token_key_list.http_path);
    v_refusal echovalue.outcome;
    v_paid echovalue.payment;
    v_body text;
    v_tokens echovalue.tokens[];
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
    -- (read first, then formatted by a statement of their own: on Citus a query on one
    -- wallet's rows runs whole on its shard, where a row is of the shard's own type; see
    -- webhook_get)
    select pg_catalog.array_agg(row(x.*)::echovalue.tokens) into v_tokens
      from echovalue.tokens x where x.wallet_id = v_caller.wallet_id;
    select '{"keys":[' || coalesce(pg_catalog.string_agg(echovalue._key_json(t), ','
                                                         order by t.created, t.id), '') || ']}'
      into v_body
      from pg_catalog.unnest(v_tokens) t;
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

-- DELETE /token/keys/{id}: revokes the token for good; its very next request gets 401 (no
-- cache: every request looks the token up). Revoking a revoked token is a no-op `OK`; an
-- unknown id, or one of another wallet, is 404; the root token cannot be revoked (400).
create function echovalue.token_key_revoke(
    token text,
    key_id text,
    http_method text default 'DELETE',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_now timestamptz := pg_catalog.now();
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
    -- (now() in a variable: Citus refuses a non-immutable function inside COALESCE)
    update echovalue.tokens t set revoked = coalesce(t.revoked, v_now)
     where t.wallet_id = v_target.wallet_id and t.id = v_target.id;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;
