-- KV listing (SPEC section 17): the keys of a group, and the groups of a wallet with their key
-- counts, in keyset pages. Names collate "C" (schema.sql), so a page of keys is one range scan
-- of the primary key from the cursor on, reading O(limit) entries however large the group, and
-- a prefix is a range too. Expired keys are never listed (until maintenance purges them they
-- are read and skipped). The opaque cursors are listing.rs's. Every page costs the price of
-- its operation, whatever its size; a refused request is charged like any KV error.

-- The limit parameter: NULL or '' mean echovalue.kv_list_default_limit; NULL result when not
-- an integer from 1 to echovalue.kv_list_max_limit (long digit strings are never cast).
create function echovalue._kv_list_limit(p_limit text) returns int
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

-- Why a listing's prefix, cursor or limit is refused, or NULL. p_after is the cursor's
-- position (NULL when it was none this listing handed out), p_limit the parsed limit.
create function echovalue._kv_list_error(
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

-- The live keys of a group from after p_after, within [p_from, p_end) (no upper bound when
-- p_end is NULL), in order, at most p_limit. One branch runs: each is a single range of the
-- primary key (an OR in the condition would make the upper bound a filter, not a bound).
create function echovalue._kv_keys_page(
    p_wallet bigint, p_grp text, p_from text, p_after text, p_end text, p_limit int
) returns table (key text, expires_at timestamptz)
language plpgsql stable as $$
begin
    return query
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit)
    union all
    (select k.key, k.expires_at from echovalue.kv k
      where p_end is not null and k.wallet_id = p_wallet and k.grp = p_grp
        and k.key >= p_from and k.key > p_after and k.key < p_end
        and k.expires_at > pg_catalog.now()
      order by k.key limit p_limit);
end;
$$;

-- GET /kv/{grp}?prefix=&cursor=&limit=: {"keys":[{"key":…,"expires":…},…],"cursor":…}, the
-- group's live keys in code point order; cursor is NULL on the last page.
create function echovalue.kv_list(
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

-- GET /kv?prefix=&cursor=&limit=: {"groups":[{"group":…,"keys":N},…],"cursor":…}, the groups
-- holding live keys in code point order with their live key counts; for a token limited to
-- some groups, only those. A page probes the primary key once per group it passes (a skip
-- scan), and counts the keys of the groups it lists.
create function echovalue.kv_groups(
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
