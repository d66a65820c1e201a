-- The calls of the scale-out suite's routing and memory checks (tests/citus_routing.sql and
-- tests/citus_memory.sql include it with \ir): every delegated API function called as the proxy
-- and the mailhook call it, a top-level statement with the routing hint.
--   pg_temp.routed_arg(proname, token, email, await): what the call's first argument is for a
--     wallet, given its token, its mailbox address and a test's await value
--   pg_temp.routed_call(function, first): the call, with `first` (an SQL expression: `$1` for a
--     prepared statement, a quoted literal otherwise) as its first argument and in its hint;
--     every other argument without a default is NULL, so a call is answered 400, which still
--     reads the token, charges and logs. Two take real arguments: request_refuse (it takes no
--     NULL status) and delivery_record (the mailhook's; no such delivery, with the wallet's id
--     as the claim's hint).
-- (Temporary functions, made on this node only: a worker refuses to pass DDL on.)
set citus.enable_ddl_propagation = off;

create function pg_temp.routed_arg(p_proname name, p_token text, p_email text, p_await text)
returns text
language sql stable as $$
    select case (select p.proargnames[1] from pg_catalog.pg_proc p
                  where p.proname = p_proname and p.pronamespace = 'echovalue'::regnamespace)
                when 'recipient' then p_email when 'test' then p_await else p_token end
$$;

create function pg_temp.routed_call(p_function regprocedure, p_first text) returns text
language sql stable as $$
    select case
        when p.proname = 'delivery_record'
            then pg_catalog.format('select * from echovalue.delivery_record(delivery_id => 0, '
                                   'attempt => 1, outcome => ''failed'', '
                                   'wallet => echovalue.token_wallet(%s))', p_first)
        else pg_catalog.format(
            'select * from echovalue.%I(%I => %s%s, wallet => echovalue.%s(%3$s))',
            p.proname, p.proargnames[1], p_first,
            case when p.proname = 'request_refuse'
                 then ', route => ''kv'', status => 400, error => ''Bad Request: x'', '
                      'http_method => ''GET'', http_path => ''/kv/g/k'''
                 else coalesce((select pg_catalog.string_agg(
                                           pg_catalog.format(', %I => null::%s', p.proargnames[i],
                                                             pg_catalog.format_type(p.proargtypes[i - 1], null)),
                                           '' order by i)
                                  from pg_catalog.generate_series(2, p.pronargs - p.pronargdefaults) i), '')
            end,
            case p.proargnames[1] when 'recipient' then 'recipient_wallet'
                                  when 'test' then 'test_wallet' else 'token_wallet' end)
    end
      from pg_catalog.pg_proc p where p.oid = p_function
$$;

reset citus.enable_ddl_propagation;
