-- echovalue 0.9.0 -> 0.10.0: scale-out on Citus, second part (issue 14, SPEC section 18).
-- Every API function that takes a token gets a last argument `wallet bigint default null`, a
-- routing hint (echovalue.token_wallet(token), public now, was _token_wallet) by which Citus
-- delegates the call to the node of its wallet; echovalue.distribute() distributes those
-- functions and gives each node its own range of ids. Maintenance, the delivery and schedule
-- claims and the Stripe credit read what is due first, without a lock, then lock it wallet by
-- wallet with statements that name the wallet (on Citus, its shard). The log's primary key puts
-- time before the id.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- logs: newest first by time, then id (on Citus the ids of one wallet's entries come from more
-- than one node's range); the primary key and the endpoint index are rebuilt in that order.
alter table echovalue.logs drop constraint logs_pkey;
alter table echovalue.logs add primary key (wallet_id, created, id);
drop index echovalue.logs_endpoint_idx;
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, created, id);

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue.request_refuse(text, text, int, text, text, text);
drop function if exists echovalue.wallet_get(text, text, text);
drop function if exists echovalue.logs_get(text, text, text, text, text);
drop function if exists echovalue.token_key_create(text, text, text, text);
drop function if exists echovalue.token_key_list(text, text, text);
drop function if exists echovalue.token_key_revoke(text, text, text, text);
drop function if exists echovalue.kv_set(text, text, text, text, text, text, text);
drop function if exists echovalue.kv_get(text, text, text, text, text);
drop function if exists echovalue.kv_delete(text, text, text, text, text);
drop function if exists echovalue.recharge_link(text, text, text, text);
drop function if exists echovalue.kv_list(text, text, text, text, text, text, text);
drop function if exists echovalue.kv_groups(text, text, text, text, text, text);
drop function if exists echovalue.webhook_set(text, text, text, text);
drop function if exists echovalue.webhook_get(text, text, text);
drop function if exists echovalue.webhook_delete(text, text, text);
drop function if exists echovalue.webhook_show(text, text, text, text);
drop function if exists echovalue.webhook_put(text, text, text, text, text);
drop function if exists echovalue.webhook_patch(text, text, text, text, text);
drop function if exists echovalue.webhook_remove(text, text, text, text);
drop function if exists echovalue.webhook_test(text, text, text, text);
drop function if exists echovalue.settings_get(text, text, text);
drop function if exists echovalue.settings_put(text, text, text, text);
drop function if exists echovalue._token_wallet(text);

-- Functions new or changed in 0.10.0.

create or replace function echovalue._wallet_resolve(p_token text, p_method text, p_path text)
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

create or replace function echovalue.kv_set(
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

create or replace function echovalue.kv_get(
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

create or replace function echovalue.kv_delete(
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

create or replace function echovalue.token_key_create(
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

create or replace function echovalue.token_key_list(
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

create or replace function echovalue.token_key_revoke(
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

create or replace function echovalue._logs_newest(p_wallet bigint, p_type text, p_limit int)
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

create or replace function echovalue.logs_get(
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

create or replace function echovalue.recharge_link(
    token text,
    amount text default '1',
    http_method text default 'GET',
    http_path text default '/recharge?amount=1',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(recharge_link.token,
        recharge_link.http_method, recharge_link.http_path);
    v_amount text := coalesce(recharge_link.amount, '1');
    v_found boolean;
    v_link text;
    v_amounts text;
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
        -- (the tiers read by a statement of their own; see _webhook_answer)
        select pg_catalog.string_agg(t.amount::text, ' or ' order by t.amount) into v_amounts
          from echovalue.recharge_tiers t;
        return echovalue._fail(v_caller, 'recharge_link', 400, 'Bad Request: amount must be '
            || coalesce(v_amounts, 'a configured tier'));
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

create or replace function echovalue._stripe_event_credit(
    p_event echovalue.stripe_events,
    out state text, out detail text, out wallet_id bigint, out credits bigint
)
language plpgsql volatile as $$
declare
    v_balance bigint;
    v_other text;
    v_wallet bigint;
    v_now timestamptz := pg_catalog.now();
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
    -- The event names the wallet by its hash: the wallet is found first (on Citus, a read of
    -- every shard; the hash is unique by construction), then credited by its id, which names
    -- its shard. A recharge is use of the wallet: it keeps the wallet from being purged as
    -- inactive.
    select w.id into v_wallet from echovalue.wallets w where w.hash = p_event.wallet_hash limit 1;
    update echovalue.wallets w
       set balance = w.balance + _stripe_event_credit.credits, last_used = v_now
     where w.id = v_wallet and w.hash = p_event.wallet_hash
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

create or replace function echovalue.request_refuse(
    token text,
    route text,
    status int,
    error text,
    http_method text,
    http_path text,
    wallet bigint default null
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
    v_cutoff timestamptz;
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
    -- (the cut-off is a value, not an expression of now(): Citus takes only immutable
    -- functions in an ON CONFLICT condition)
    v_cutoff := pg_catalog.now() - pg_catalog.make_interval(secs => v_rate);
    insert into echovalue.token_rate as r (client, last_at)
    values (v_client, pg_catalog.now())
    on conflict (client) do update set last_at = excluded.last_at
        where r.last_at <= v_cutoff
    returning true into v_allowed;
    if v_allowed is null then
        select r.last_at into v_last from echovalue.token_rate r where r.client = v_client;
        return echovalue._outcome(429, 'Too Many Requests', null, null,
            p_headers => pg_catalog.jsonb_build_object('retry-after', greatest(1, pg_catalog.ceil(
                v_rate - extract(epoch from pg_catalog.now() - v_last)))::bigint::text));
    end if;

    -- a random wallet id, drawn again in the rare case it is taken (1 in 2.8e12 per wallet)
    loop
        v_token := echovalue._token_generate(echovalue._wallet_id_new());
        insert into echovalue.wallets (id, balance, hash)
        values (echovalue.token_wallet(v_token), v_start - v_cost,
                pg_catalog.encode(echovalue._token_hash(v_token), 'hex'))
        on conflict (id) do nothing
        returning id into v_caller.wallet_id;
        exit when v_caller.wallet_id is not null;
    end loop;
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
    http_path text default '/token',
    wallet bigint default null
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

create or replace function echovalue.kv_list(
    token text,
    grp text,
    prefix text default null,
    cursor text default null,
    page_size text default null,
    http_method text default 'GET',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(kv_list.token, kv_list.http_method,
        coalesce(kv_list.http_path, '/kv/' || kv_list.grp));
    v_prefix text := coalesce(kv_list.prefix, '');
    v_limit int := echovalue._kv_list_limit(kv_list.page_size);
    v_after text;
    v_error text;
    v_paid echovalue.payment;
    v_keys text[];
    v_expires timestamptz[];
    v_entries text;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if kv_list.cursor <> '' then
        v_after := echovalue._cursor_after(kv_list.cursor, 'k', kv_list.grp);
    end if;
    v_error := coalesce(echovalue._name_error('group', kv_list.grp),
                        echovalue._kv_list_error(v_prefix, kv_list.cursor, v_after, v_limit));
    if v_error is not null then
        return echovalue._fail(v_caller, 'kv_list', 400, v_error, p_group => kv_list.grp);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_list', p_group => kv_list.grp);
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    -- one more than the page, to know whether another page follows
    -- (a function's result loses the column's collation: ordered "C" again here)
    select pg_catalog.array_agg(p.key order by p.key collate "C"),
           pg_catalog.array_agg(p.expires_at order by p.key collate "C")
      into v_keys, v_expires
      from echovalue._kv_keys_page(v_caller.wallet_id, kv_list.grp, v_prefix, coalesce(v_after, ''),
                                   echovalue._prefix_end(v_prefix), v_limit + 1) p;
    select coalesce(pg_catalog.string_agg(pg_catalog.format('{"key":%s,"expires":%s}',
               echovalue._json_str(e.key), echovalue._json_str(echovalue._ts(e.expires_at))), ',' order by e.n), '')
      into v_entries
      from unnest(v_keys[1:v_limit], v_expires[1:v_limit]) with ordinality e(key, expires_at, n);
    return echovalue._finish(v_caller, v_paid, 200,
        '{"keys":[' || v_entries || '],"cursor":' || echovalue._json_str(case
            when pg_catalog.cardinality(v_keys) > v_limit then echovalue._cursor('k', kv_list.grp, v_keys[v_limit])
        end) || '}', 'application/json');
end;
$$;

create or replace function echovalue.kv_groups(
    token text,
    prefix text default null,
    cursor text default null,
    page_size text default null,
    http_method text default 'GET',
    http_path text default '/kv',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(kv_groups.token, kv_groups.http_method,
                                                            kv_groups.http_path);
    v_prefix text := coalesce(kv_groups.prefix, '');
    v_limit int := echovalue._kv_list_limit(kv_groups.page_size);
    v_end text := echovalue._prefix_end(v_prefix);
    v_after text;
    v_error text;
    v_paid echovalue.payment;
    v_grp text;
    v_last text;
    v_keys bigint;
    v_entries text[] := '{}';
    v_more boolean := false;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if kv_groups.cursor <> '' then
        v_after := echovalue._cursor_after(kv_groups.cursor, 'g', null);
    end if;
    v_error := echovalue._kv_list_error(v_prefix, kv_groups.cursor, v_after, v_limit);
    if v_error is not null then
        return echovalue._fail(v_caller, 'kv_groups', 400, v_error);
    end if;
    v_paid := echovalue._pay(v_caller, 'kv_groups');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    v_grp := coalesce(v_after, '');
    loop
        if v_caller.groups is null then
            select k.grp into v_grp from echovalue.kv k
             where k.wallet_id = v_caller.wallet_id and k.grp > v_grp and k.grp >= v_prefix
             order by k.grp limit 1;
        else
            select g into v_grp from pg_catalog.unnest(v_caller.groups) g
             where g collate "C" > v_grp and g collate "C" >= v_prefix
             order by g collate "C" limit 1;
        end if;
        exit when not found or v_grp collate "C" >= v_end;
        select pg_catalog.count(*) into v_keys from echovalue.kv k
         where k.wallet_id = v_caller.wallet_id and k.grp = v_grp and k.expires_at > pg_catalog.now();
        if v_keys > 0 then
            if pg_catalog.cardinality(v_entries) = v_limit then
                v_more := true;
                exit;
            end if;
            v_entries := v_entries || pg_catalog.format('{"group":%s,"keys":%s}',
                                                        echovalue._json_str(v_grp), v_keys);
            v_last := v_grp;
        end if;
    end loop;
    return echovalue._finish(v_caller, v_paid, 200,
        '{"groups":[' || pg_catalog.array_to_string(v_entries, ',') || '],"cursor":' || echovalue._json_str(case
            when v_more then echovalue._cursor('g', null, v_last)
        end) || '}', 'application/json');
end;
$$;

create or replace function echovalue._webhook_answer(
    p_caller echovalue.caller, p_paid echovalue.payment, p_name text
) returns echovalue.outcome
language plpgsql volatile as $$
declare
    v_hook echovalue.webhooks;
    v_hash text;
begin
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = p_caller.wallet_id and h.name = p_name;
    if not found then
        return echovalue._finish(p_caller, p_paid, 404, 'Webhook Not Found');
    end if;
    -- (the hash read by a statement of its own: on Citus an expression holding a query of
    -- the wallet's rows runs whole on its shard, where _finish could not write the log)
    select w.hash into v_hash from echovalue.wallets w where w.id = p_caller.wallet_id;
    return echovalue._finish(p_caller, p_paid, 200, echovalue._webhook_response(v_hook, v_hash),
                             'application/json');
end;
$$;

create or replace function echovalue.webhook_set(
    token text,
    body text,
    http_method text default 'POST',
    http_path text default '/webhook',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_set.token, webhook_set.http_method,
                                                            webhook_set.http_path);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_set', 'default', webhook_set.body);
end;
$$;

create or replace function echovalue.webhook_get(
    token text,
    http_method text default 'GET',
    http_path text default '/webhook',
    wallet bigint default null
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
    v_hooks echovalue.webhooks[];
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
    select w.hash into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    select * into v_hook from echovalue.webhooks h
     where h.wallet_id = v_caller.wallet_id and h.name = 'default';
    if found then
        v_body := pg_catalog.format('{"webhook":%s,"headers":%s,"email":%s,"hash":%s,"secret":%s',
            echovalue._json_str(v_hook.url), echovalue._webhook_headers_json(v_hook.headers),
            v_email, echovalue._json_str(v_hash), echovalue._json_str(v_mailbox.secret));
    else
        v_body := pg_catalog.format('{"email":%s,"hash":%s', v_email, echovalue._json_str(v_hash));
    end if;
    -- The rows are read first, then formatted by a statement of their own: on Citus a query
    -- on one wallet's rows runs whole on its shard, where _webhook_response could not read
    -- mailboxes (a query from a shard may not be distributed again), and where a row is of
    -- the shard's own type.
    select pg_catalog.array_agg(row(x.*)::echovalue.webhooks) into v_hooks
      from echovalue.webhooks x where x.wallet_id = v_caller.wallet_id;
    v_body := v_body || ',"webhooks":[' || coalesce((
        select pg_catalog.string_agg(echovalue._webhook_response(h, v_hash), ',' order by h.name)
          from pg_catalog.unnest(v_hooks) h), '') || ']}';
    return echovalue._finish(v_caller, v_paid, 200, v_body, 'application/json');
end;
$$;

create or replace function echovalue.webhook_delete(
    token text,
    http_method text default 'DELETE',
    http_path text default '/webhook',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_delete.token, webhook_delete.http_method,
                                                            webhook_delete.http_path);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_remove(v_caller, 'webhook_delete', 'default');
end;
$$;

create or replace function echovalue.webhook_show(
    token text,
    webhook_id text,
    http_method text default 'GET',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_show.token, webhook_show.http_method,
        coalesce(webhook_show.http_path, '/webhook/' || webhook_show.webhook_id));
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    v_paid := echovalue._pay(v_caller, 'webhook_show');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    return echovalue._webhook_answer(v_caller, v_paid, webhook_show.webhook_id);
end;
$$;

create or replace function echovalue.webhook_put(
    token text,
    webhook_id text,
    body text,
    http_method text default 'PUT',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_put.token, webhook_put.http_method,
        coalesce(webhook_put.http_path, '/webhook/' || webhook_put.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_put', webhook_put.webhook_id, webhook_put.body);
end;
$$;

create or replace function echovalue.webhook_patch(
    token text,
    webhook_id text,
    body text,
    http_method text default 'PATCH',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_patch.token, webhook_patch.http_method,
        coalesce(webhook_patch.http_path, '/webhook/' || webhook_patch.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_write(v_caller, 'webhook_patch', webhook_patch.webhook_id, webhook_patch.body);
end;
$$;

create or replace function echovalue.webhook_remove(
    token text,
    webhook_id text,
    http_method text default 'DELETE',
    http_path text default null,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(webhook_remove.token, webhook_remove.http_method,
        coalesce(webhook_remove.http_path, '/webhook/' || webhook_remove.webhook_id));
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    return echovalue._webhook_remove(v_caller, 'webhook_remove', webhook_remove.webhook_id);
end;
$$;

create or replace function echovalue.mail_rcpt_check(recipient text) returns echovalue.smtp_reply
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

create or replace function echovalue._attachments_json(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
declare
    v_expires timestamptz := pg_catalog.date_trunc('second', pg_catalog.now())
        + pg_catalog.make_interval(secs => echovalue._setting('attachment_url_seconds'));
    v_epoch bigint := pg_catalog.date_part('epoch', v_expires)::bigint;
    v_base text := pg_catalog.rtrim(echovalue._setting_text('public_url'), '/');
    v_ids bigint[];
    v_names text[];
    v_types text[];
    v_sizes int[];
begin
    -- The rows are read first, then formatted by a statement of their own: on Citus a query
    -- on one wallet's rows runs whole on its shard, where _attachment_sig could not read the
    -- installation key (a query from a shard may not be distributed again).
    select pg_catalog.array_agg(a.id order by a.position), pg_catalog.array_agg(a.filename order by a.position),
           pg_catalog.array_agg(a.content_type order by a.position), pg_catalog.array_agg(a.size order by a.position)
      into v_ids, v_names, v_types, v_sizes
      from echovalue.attachments a
     where a.wallet_id = p_wallet and a.message_id = p_message;
    return '[' || coalesce((
        select pg_catalog.string_agg(pg_catalog.format(
                   '{"filename":%s,"contentType":%s,"size":%s,"downloadUrl":%s,"downloadUrlExpiresAt":%s}',
                   echovalue._json_str(a.filename), echovalue._json_str(a.content_type), a.size,
                   echovalue._json_str(pg_catalog.format('%s/attachments/%s?expires=%s&sig=%s', v_base, a.id,
                                                         v_epoch, echovalue._attachment_sig(a.id, v_epoch))),
                   echovalue._json_str(echovalue._ts(v_expires))), ',' order by a.n)
          from rows from (pg_catalog.unnest(v_ids), pg_catalog.unnest(v_names), pg_catalog.unnest(v_types),
                          pg_catalog.unnest(v_sizes)) with ordinality a(id, filename, content_type, size, n)), '') || ']';
end;
$$;

create or replace function echovalue._delivery_payload(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
declare
    v_message echovalue.messages;
    v_hash text;
begin
    -- (read first, formatted after: see _attachments_json)
    select m.* into v_message from echovalue.messages m
     where m.wallet_id = p_wallet and m.id = p_message;
    if not found then
        return null;
    end if;
    select w.hash into v_hash from echovalue.wallets w where w.id = p_wallet;
    return echovalue._mail_payload(v_message.external_id, v_message.received_at, v_message.from_email,
                                   v_message.from_name, v_hash, v_message.subject, v_message.text_body,
                                   v_message.html_body, v_message.headers::text,
                                   echovalue._attachments_json(p_wallet, p_message));
end;
$$;

create or replace function echovalue._delivery_log(
    p_wallet bigint, p_webhook_id text, p_status int, p_error text, p_kind text default 'mail'
) returns void
language plpgsql volatile as $$
declare
    v_balance bigint;
begin
    -- (the balance read by a statement of its own: on Citus a query of the wallet's row runs
    -- whole on its shard, where the entry could not be written)
    select w.balance into v_balance from echovalue.wallets w where w.id = p_wallet;
    if found then
        perform echovalue._log(p_wallet,
                              case when p_kind = 'alert_email' then 'email' else 'webhook-delivery' end,
                              case when p_kind = 'alert_email' then 'SMTP' else 'POST' end,
                              p_webhook_id, p_status, p_error, 0, v_balance);
    end if;
end;
$$;

create or replace function echovalue._delivery_lease(p_batch int, p_lease int, p_email boolean default false)
returns table (wallet_id bigint, id bigint, message_id bigint, attempts int, webhook_id text,
               webhook text, kind text, body text)
language plpgsql volatile as $$
declare
    v_now timestamptz := pg_catalog.now();
    v_until timestamptz := v_now + pg_catalog.make_interval(secs => p_lease);
    v_tests_from timestamptz := v_now - echovalue._test_claim_window();
    v_class text;
    v_wallets bigint[];
    v_ids bigint[];
    v_wallet bigint;
    v_wallet_ids bigint[];
    v_left int := p_batch;
    v_n int;
begin
    foreach v_class in array case when p_email then array['alert_email'] else array['test', 'other'] end
    loop
        if v_class = 'alert_email' then
            select pg_catalog.array_agg(d.wallet_id order by d.next_attempt_at, d.id),
                   pg_catalog.array_agg(d.id order by d.next_attempt_at, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.next_attempt_at from echovalue.deliveries d
                     where d.state = 'pending' and d.kind = 'alert_email' and d.next_attempt_at <= v_now
                     order by d.next_attempt_at, d.id
                     limit 4 * v_left) d;
        elsif v_class = 'test' then
            select pg_catalog.array_agg(d.wallet_id order by d.created, d.id),
                   pg_catalog.array_agg(d.id order by d.created, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.created from echovalue.deliveries d
                     where d.state = 'pending' and d.kind = 'test' and d.attempts = 0
                       and d.created > v_tests_from
                     order by d.created, d.id
                     limit 4 * v_left) d;
        else
            select pg_catalog.array_agg(d.wallet_id order by d.next_attempt_at, d.id),
                   pg_catalog.array_agg(d.id order by d.next_attempt_at, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.next_attempt_at from echovalue.deliveries d
                     where d.state = 'pending' and d.kind not in ('test', 'alert_email')
                       and d.next_attempt_at <= v_now
                     order by d.next_attempt_at, d.id
                     limit 4 * v_left) d;
        end if;
        -- wallet by wallet, in the order of each wallet's first due row
        for v_wallet, v_wallet_ids in
            select u.w, pg_catalog.array_agg(u.i order by u.n)
              from rows from (pg_catalog.unnest(v_wallets), pg_catalog.unnest(v_ids)) with ordinality u(w, i, n)
             group by u.w
             order by pg_catalog.min(u.n)
        loop
            return query
                update echovalue.deliveries d
                   set attempts = d.attempts + 1, next_attempt_at = v_until
                 where d.wallet_id = v_wallet and d.id = any (array(
                     select x.id from echovalue.deliveries x
                      where x.wallet_id = v_wallet and x.id = any (v_wallet_ids) and x.state = 'pending'
                        and case v_class
                                when 'test' then x.kind = 'test' and x.attempts = 0 and x.created > v_tests_from
                                when 'alert_email' then x.kind = 'alert_email' and x.next_attempt_at <= v_now
                                else x.kind not in ('test', 'alert_email') and x.next_attempt_at <= v_now
                            end
                      order by pg_catalog.array_position(v_wallet_ids, x.id)
                      limit v_left
                      for update skip locked))
                returning d.wallet_id, d.id, d.message_id, d.attempts, d.webhook_id, d.webhook, d.kind, d.body;
            get diagnostics v_n = row_count;
            v_left := v_left - v_n;
            exit when v_left = 0;
        end loop;
        exit when v_left = 0;
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
                                     delivery_record.delivery_id || ':' || v_webhook_id);
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

create or replace function echovalue._purge(p_table text, p_due text, p_cutoff timestamptz, p_batch int)
returns bigint
language plpgsql volatile as $$
declare
    v_wallet bigint;
    v_left bigint := p_batch;
    v_n bigint;
begin
    for v_wallet in execute pg_catalog.format(
        'select distinct x.wallet_id from (select x.wallet_id from echovalue.%I x where %s limit $2) x',
        p_table, p_due) using p_cutoff, p_batch
    loop
        execute pg_catalog.format(
            'delete from echovalue.%1$I t where t.wallet_id = $3 and t.ctid = any (array('
            'select x.ctid from echovalue.%1$I x where x.wallet_id = $3 and (%2$s) '
            'limit $2 for update skip locked))', p_table, p_due)
            using p_cutoff, v_left, v_wallet;
        get diagnostics v_n = row_count;
        v_left := v_left - v_n;
        exit when v_left <= 0;
    end loop;
    return p_batch - v_left;
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
    end loop;
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

    return v_result || pg_catalog.jsonb_build_object('wallets', v_wallets);
end;
$$;

create or replace function echovalue._node_sequences() returns int
language plpgsql volatile as $$
declare
    v_start bigint;
    v_sequence text;
    v_moved int := 0;
begin
    select l.groupid::bigint << 48 into v_start from pg_catalog.pg_dist_local_group l;
    for v_sequence in
        select pg_catalog.format('%I.%I', s.schemaname, s.sequencename) from pg_catalog.pg_sequences s
         where s.schemaname = 'echovalue' and coalesce(s.last_value, 0) < v_start
    loop
        perform pg_catalog.setval(v_sequence::regclass, v_start);
        v_moved := v_moved + 1;
    end loop;
    return v_moved;
end;
$$;

create or replace function echovalue.listen_nodes() returns table (host text, port int)
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        return;
    end if;
    return query
        select n.nodename::text, n.nodeport::int from pg_catalog.pg_dist_node n
         where n.isactive and n.noderole = 'primary'
           and n.groupid <> (select l.groupid from pg_catalog.pg_dist_local_group l)
         order by n.groupid;
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
                                   'token_legacy', 'token_rate', 'stripe_events'] loop
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
    v_now timestamptz := pg_catalog.now();
    v_wallet bigint;
    v_name text;
    v_balance bigint;
    v_price bigint;
begin
    if schedule_claim.batch is null or schedule_claim.batch not between 1 and 10000 then
        raise exception 'echovalue: schedule_claim needs batch 1..10000'
            using errcode = 'invalid_parameter_value';
    end if;
    -- The due webhooks are read first, without a lock; then each is locked with its wallet by
    -- a statement that names the wallet (on Citus it runs on that wallet's shard: Citus
    -- refuses FOR UPDATE across shards). A webhook whose row or wallet another transaction
    -- holds, or that another worker planned meanwhile, is skipped and does not count.
    for v_wallet, v_name in
        select h.wallet_id, h.name from echovalue.webhooks h
         where h.next_run_at is not null and h.next_run_at <= v_now
         order by h.next_run_at
         limit schedule_claim.batch
    loop
        select h.* into v_hook
          from echovalue.webhooks h
          join echovalue.wallets w on w.id = h.wallet_id
         where h.wallet_id = v_wallet and w.id = v_wallet and h.name = v_name
           and h.next_run_at <= v_now
           for update of h skip locked
           for no key update of w skip locked;
        continue when not found;
        v_n := v_n + 1;
        v_status := v_hook.last_status;
        v_error := v_hook.last_error;
        v_ran := v_hook.last_run_at;
        begin
            v_for := greatest(v_hook.next_run_at,
                              echovalue.schedule_latest(v_hook.cron, v_hook.timezone, v_now));
            v_caller := row(v_hook.wallet_id, null, null, null, null, null, 'CRON',
                            '/webhook/' || v_hook.name, null, null)::echovalue.caller;
            -- (read by statements of their own: on Citus a query of the wallet's rows runs
            -- whole on its shard, where _price could not read the prices)
            select w.balance into v_balance from echovalue.wallets w where w.id = v_hook.wallet_id;
            v_price := (echovalue._price('scheduled_run')).credits;
            if exists (select 1 from echovalue.deliveries d
                        where d.wallet_id = v_hook.wallet_id and d.webhook = v_hook.name
                          and d.kind = 'scheduled' and d.scheduled_for = v_for) then
                -- already run: cannot happen while next_run_at only moves forward; the unique
                -- index (webhook, occurrence) is the guard
                null;
            elsif v_hook.last_error = c_unpaid and v_balance < v_price then
                -- still unpaid: recorded and logged at the first skip of the streak; a wallet
                -- kept only by its schedules is not "used" and goes after echovalue.inactive_days
                null;
            else
                v_paid := echovalue._pay(v_caller, 'scheduled_run');
                v_ran := v_now;
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
               set next_run_at = echovalue.schedule_next(h.cron, h.timezone, greatest(v_now, v_for)),
                   last_run_at = v_ran, last_status = v_status, last_error = v_error
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        exception when others then
            -- one webhook's failure must not hold up every other schedule
            raise warning 'echovalue: planning a run of webhook % of wallet % failed: %',
                v_hook.name, v_hook.wallet_id, sqlerrm;
            update echovalue.webhooks h
               set next_run_at = v_now + interval '1 minute', last_status = 'failure',
                   last_error = 'the run could not be planned; it is tried again in a minute'
             where h.wallet_id = v_hook.wallet_id and h.name = v_hook.name;
        end;
    end loop;
    return v_n;
end;
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
    v_out.headers := coalesce(v_out.headers, '{}'::jsonb)
                     || pg_catalog.jsonb_build_object('x-echovalue-await', v_id || ':' || v_webhook_id);
    return v_out;
end;
$$;

create or replace function echovalue.webhook_test_result(test text, final boolean default false)
returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_m text[] := pg_catalog.regexp_match(webhook_test_result.test, '^([1-9][0-9]{0,17}):(msg_[0-9a-f]{32})$');
    v_row echovalue.deliveries;
    v_why text;
    v_wallet bigint;
begin
    if v_m is null then
        raise exception 'echovalue: webhook_test_result needs the x-echovalue-await value of a test'
            using errcode = 'invalid_parameter_value';
    end if;
    -- (its wallet read first: on Citus a FOR UPDATE must name the shard)
    select d.wallet_id into v_wallet from echovalue.deliveries d
     where d.id = v_m[1]::bigint and d.webhook_id = v_m[2] and d.kind = 'test';
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

create or replace function echovalue._alert_low_balance(p_wallet bigint, p_balance bigint, p_threshold bigint)
returns void
language plpgsql volatile as $$
declare
    v_hash text;
begin
    -- (the hash read by a statement of its own: on Citus a query of the wallet's row runs
    -- whole on its shard, where the alert could not be queued)
    select w.hash into v_hash from echovalue.wallets w where w.id = p_wallet;
    if found then
        perform echovalue._alert_queue(p_wallet, pg_catalog.format(
            '{"type":"wallet.low_balance","wallet":%s,"threshold":%s,"token_hash":%s}',
            p_balance, p_threshold, echovalue._json_str(v_hash)));
    end if;
end;
$$;

create or replace function echovalue._alert_recharged(p_wallet bigint, p_credits bigint, p_balance bigint)
returns void
language plpgsql volatile as $$
declare
    v_hash text;
begin
    -- (read first, as in _alert_low_balance)
    select w.hash into v_hash from echovalue.wallets w
     where w.id = p_wallet and w.low_balance_threshold > 0;   -- threshold 0: alerts are off
    if found then
        perform echovalue._alert_queue(p_wallet, pg_catalog.format(
            '{"type":"wallet.recharged","credits":%s,"wallet":%s,"token_hash":%s}',
            p_credits, p_balance, echovalue._json_str(v_hash)));
    end if;
end;
$$;

create or replace function echovalue.settings_get(
    token text,
    http_method text default 'GET',
    http_path text default '/token/settings',
    wallet bigint default null
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
    http_path text default '/token/settings',
    wallet bigint default null
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
    insert into echovalue.wallet_settings as s
        (wallet_id, url, headers, format, template, options, email, updated)
    values (v_caller.wallet_id, v_hook ->> 'url',
            coalesce(nullif(v_hook -> 'headers', 'null'::jsonb), '{}'),
            coalesce(v_hook ->> 'format', ''), v_template::json,
            coalesce(nullif(v_hook -> 'options', 'null'::jsonb), '{}'),
            v_settings ->> 'low_balance_email', pg_catalog.now())
    -- (excluded.updated, not now(): Citus takes only immutable functions in DO UPDATE SET)
    on conflict (wallet_id) do update
       set url = excluded.url, headers = excluded.headers, format = excluded.format,
           template = excluded.template, options = excluded.options, email = excluded.email,
           updated = excluded.updated;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

CREATE  FUNCTION "token_wallet"(
	"token" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'token_wallet_wrapper';

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
    echovalue.webhook_test_result(text, boolean),
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
    echovalue.alert_email_claim(int, int),
    echovalue.listen_nodes()
to echovalue_worker;
