-- echovalue 0.7.0 -> 0.8.0: KV listing (issue 13, SPEC section 17). Group and key names sort
-- by code point (collation "C"), so a listing page is a range of the primary key; equality is
-- bytewise in every deterministic collation, so no key changes identity. The primary key is
-- rebuilt in the new order (the table itself is not rewritten).
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.kv
    alter column grp type text collate "C",
    alter column key type text collate "C";

insert into echovalue.prices (operation, credits, endpoint, scope) values
    ('kv_list', 1, 'kv', 'kv:read'), ('kv_groups', 1, 'kv', 'kv:read')
on conflict (operation) do nothing;

-- Functions new or changed in 0.8.0.

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
    -- (any data error: bad JSON, a number out of range, bad escapes; and nesting too deep)
    exception when data_exception or program_limit_exceeded then
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

create or replace function echovalue._refusal_operation(p_route text, p_method text) returns text
language sql immutable as $$
    select case
        when p_route in ('/kv/{group}/{key}', '/{group}/{key}') then
            case p_method when 'POST' then 'kv_set' when 'DELETE' then 'kv_delete' else 'kv_get' end
        when p_route = '/kv/{group}' then 'kv_list'
        when p_route = '/kv' then 'kv_groups'
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

create or replace function echovalue._kv_list_limit(p_limit text) returns int
language plpgsql stable as $$
declare
    v_max int := echovalue._setting('kv_list_max_limit');
begin
    if p_limit is null or p_limit = '' then
        return least(echovalue._setting('kv_list_default_limit'), v_max);
    end if;
    if p_limit !~ '^[0-9]{1,9}$' then
        return null;
    end if;
    if p_limit::int not between 1 and v_max then
        return null;
    end if;
    return p_limit::int;
end;
$$;

create or replace function echovalue._kv_list_error(
    p_prefix text, p_cursor text, p_after text, p_limit int
) returns text
language sql stable as $$
    select case
        when p_prefix <> '' and echovalue._name_error('key', p_prefix) is not null then
            pg_catalog.format('Bad Request: prefix must be at most %s characters, without ''/'' or control characters',
                              echovalue._setting('max_name_chars'))
        when p_cursor <> '' and p_after is null then
            'Bad Request: cursor must be one a page of this listing returned'
        when p_limit is null then
            pg_catalog.format('Bad Request: limit must be an integer from 1 to %s',
                              echovalue._setting('kv_list_max_limit'))
    end
$$;

create or replace function echovalue._kv_keys_page(
    p_wallet bigint, p_grp text, p_from text, p_after text, p_end text, p_limit int
) returns table (key text, expires_at timestamptz)
language sql stable as $$
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit)
    union all
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is not null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.key < p_end
        and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit)
$$;

create or replace function echovalue.kv_list(
    token text,
    grp text,
    prefix text default null,
    cursor text default null,
    page_size text default null,
    http_method text default 'GET',
    http_path text default null
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
    http_path text default '/kv'
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

CREATE  FUNCTION "_cursor"(
	"kind" TEXT, /* & str */
	"grp" TEXT, /* Option < & str > */
	"last" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cursor_sql_wrapper';

CREATE  FUNCTION "_cursor_after"(
	"cursor" TEXT, /* & str */
	"kind" TEXT, /* & str */
	"grp" TEXT /* Option < & str > */
) RETURNS TEXT /* Option < String > */
STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'cursor_after_sql_wrapper';

CREATE  FUNCTION "_prefix_end"(
	"prefix" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'prefix_end_sql_wrapper';

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
    echovalue.kv_list(text, text, text, text, text, text, text),
    echovalue.kv_groups(text, text, text, text, text, text),
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
