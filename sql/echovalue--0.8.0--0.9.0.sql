-- echovalue 0.8.0 -> 0.9.0: every unique key of a wallet's rows holds wallet_id, and tokens
-- carry their wallet's key (issue 14, SPEC section 18: the schema can be sharded by wallet).
-- New wallets get random ids (echovalue._wallet_id_new()); the ids of the wallets made before
-- stay, and the first 8 of the 32 characters of a token made from now on are its wallet's id
-- in base36. A token made before is random all through: echovalue.token_legacy maps it to its
-- wallet, filled here once with every token there is.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

-- wallets: the id is no longer drawn from a sequence; the hash is found by a plain index
-- (the sequence leaves the extension's dump list first: dropping it would leave its OID there)
alter extension echovalue drop sequence echovalue.wallets_id_seq;
alter table echovalue.wallets alter column id drop identity;
alter table echovalue.wallets drop constraint wallets_hash_key;
create index wallets_hash_idx on echovalue.wallets (hash);

create table echovalue.token_legacy (
    hash      bytea primary key,
    wallet_id bigint not null
);
insert into echovalue.token_legacy (hash, wallet_id)
select t.hash, t.wallet_id from echovalue.tokens t;
select pg_catalog.pg_extension_config_dump('echovalue.token_legacy', '');

-- tokens: keyed within their wallet, and their usage by (wallet, token)
alter table echovalue.token_usage drop constraint token_usage_token_id_fkey;
drop index echovalue.token_usage_token_id_idx;
alter table echovalue.tokens drop constraint tokens_pkey;
alter table echovalue.tokens drop constraint tokens_hash_key;
alter table echovalue.tokens drop constraint tokens_public_id_key;
drop index echovalue.tokens_wallet_id_idx;
alter table echovalue.tokens
    add constraint tokens_pkey primary key (wallet_id, id),
    add constraint tokens_wallet_id_hash_key unique (wallet_id, hash),
    add constraint tokens_wallet_id_public_id_key unique (wallet_id, public_id);
alter table echovalue.token_usage
    add constraint token_usage_wallet_id_token_id_fkey foreign key (wallet_id, token_id)
        references echovalue.tokens (wallet_id, id) on delete cascade;

-- Functions gone, or whose arguments or result changed.

drop function if exists echovalue._token_generate();

-- Functions new or changed in 0.9.0.

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
    v_wallet := echovalue._token_wallet(p_token);
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

    -- a random wallet id, drawn again in the rare case it is taken (1 in 2.8e12 per wallet)
    loop
        v_token := echovalue._token_generate(echovalue._wallet_id_new());
        insert into echovalue.wallets (id, balance, hash)
        values (echovalue._token_wallet(v_token), v_start - v_cost,
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
     where t.wallet_id = v_target.wallet_id and t.id = v_target.id;
    return echovalue._finish(v_caller, v_paid, 200, 'OK');
end;
$$;

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
    v_unmessaged bigint;
    v_wallets bigint;
    v_wallet_ids bigint[];
    v_token_ids bigint[];
    v_hashes bytea[];
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
    -- ON DELETE CASCADE; an old token's row of token_legacy goes with it.
    with gone as (
        delete from echovalue.tokens t
         where t.ctid = any (array(
             select x.ctid from echovalue.tokens x
              where x.revoked < pg_catalog.now()
                    - pg_catalog.make_interval(days => echovalue._setting('revoked_token_days'))
              limit v_batch for update skip locked))
        returning t.hash
    )
    select pg_catalog.array_agg(g.hash) into v_hashes from gone g;
    v_revoked := coalesce(pg_catalog.cardinality(v_hashes), 0);
    delete from echovalue.token_legacy l where l.hash = any (v_hashes);

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

    -- Runs, tests and alerts (no message) after the same time: finished runs and alerts, and
    -- every test (a test is answered within seconds).
    delete from echovalue.deliveries d
     where d.ctid = any (array(
         select x.ctid from echovalue.deliveries x
          where x.kind <> 'mail' and (x.kind = 'test' or x.state <> 'pending')
            and x.created <= pg_catalog.now()
                - pg_catalog.make_interval(hours => echovalue._setting('message_retention_hours'))
          limit v_batch for update skip locked));
    get diagnostics v_unmessaged = row_count;

    -- A request may lock its token (recording last_used), then its wallet. Here the wallets
    -- are locked first, so a token a request already holds is only tried with SKIP LOCKED and
    -- its wallet is left for a later run: maintenance never waits for a request, so the two
    -- cannot deadlock.
    v_wallet_ids := array(
        select x.id from echovalue.wallets x
         where x.last_used < pg_catalog.now()
               - pg_catalog.make_interval(days => echovalue._setting('inactive_days'))
         limit v_batch for update skip locked);
    select pg_catalog.array_agg(t.id), pg_catalog.array_agg(t.hash) into v_token_ids, v_hashes
      from (select t.id, t.hash from echovalue.tokens t
             where t.wallet_id = any (v_wallet_ids) for update skip locked) t;
    -- tokens and kv of these wallets go by ON DELETE CASCADE, logs (no foreign key) here
    with gone as (
        delete from echovalue.wallets w
         where w.id = any (v_wallet_ids)
           and not exists (select 1 from echovalue.tokens t
                            where t.wallet_id = w.id
                              and t.id <> all (coalesce(v_token_ids, '{}')))
        returning w.id
    ), gone_logs as (
        delete from echovalue.logs l where l.wallet_id in (select g.id from gone g)
    )
    select pg_catalog.count(*) into v_wallets from gone;
    -- (the old tokens of a wallet kept keep their rows)
    delete from echovalue.token_legacy l
     where l.hash = any (v_hashes)
       and not exists (select 1 from echovalue.wallets w where w.id = l.wallet_id);

    return pg_catalog.jsonb_build_object(
        'kv', v_kv, 'logs', v_logs, 'token_rate', v_rate, 'token_usage', v_usage,
        'revoked_tokens', v_revoked, 'attachments', v_attachments, 'messages', v_messages, 'runs_and_tests', v_unmessaged,
        'wallets', v_wallets);
end;
$$;

CREATE  FUNCTION "_token_generate"(
	"p_wallet" bigint /* i64 */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wallet_token_generate_wrapper';

CREATE  FUNCTION "_token_wallet"(
	"token" TEXT /* & str */
) RETURNS bigint /* Option < i64 > */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'token_wallet_wrapper';

CREATE  FUNCTION "_wallet_id_new"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wallet_id_new_wrapper';

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
