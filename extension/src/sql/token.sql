-- Token and wallet API: create a wallet with its root token, read the wallet.

-- POST /token: a new wallet with echovalue.start_credits and its root token (the body).
-- At most one per echovalue.token_rate_seconds per client network (the address's
-- echovalue.token_rate_ipv4_prefix or token_rate_ipv6_prefix network), across all proxies. The
-- address is the connection's; only a member of echovalue_gateway (the proxy, which knows
-- the HTTP client's) may give another (insufficient_privilege otherwise).
create function echovalue.token_new(
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

-- GET /token: {"wallet":<balance after this charge>,"created":"…","hash":"…"}.
create function echovalue.wallet_get(
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
