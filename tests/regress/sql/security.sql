-- Privileges: the proxy's role (member of echovalue_api) executes the API functions only;
-- it cannot read or write tables, call internal helpers, or change settings.
\set VERBOSITY terse

-- what echovalue_api may execute: exactly the API
select p.proname, pg_get_function_identity_arguments(p.oid) as args
  from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace
   and has_function_privilege('echovalue_api', p.oid, 'execute')
 order by 1;
-- what echovalue_worker (the mailhook) may execute: exactly the worker functions
select p.proname, pg_get_function_identity_arguments(p.oid) as args
  from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace
   and has_function_privilege('echovalue_worker', p.oid, 'execute')
 order by 1;
-- no table or sequence privilege at all
select c.relname, c.relkind
  from pg_class c
 where c.relnamespace = 'echovalue'::regnamespace and c.relkind in ('r', 'S', 'v')
   and (has_table_privilege('echovalue_api', c.oid, 'select, insert, update, delete, truncate, references, trigger')
        or has_table_privilege('echovalue_worker', c.oid, 'select, insert, update, delete, truncate, references, trigger')
        or has_table_privilege('public', c.oid, 'select, insert, update, delete'));
-- PUBLIC may execute nothing in the schema
select count(*) as public_executable
  from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace
   and exists (select 1 from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                where a.grantee = 0 and a.privilege_type = 'EXECUTE');
-- every API function is security definer with a pinned search_path; helpers are not exposed
select p.proname, p.prosecdef, p.provolatile, p.proconfig
  from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace and p.proname !~ '^_'
 order by 1;
-- every setting is superuser-only (or stricter); calling into the library defines them
select echovalue.token_format_ok('') as library_loaded;
-- (the worker's two settings exist only when preloaded: postmaster and sighup context)
select name, context, boot_val, min_val, max_val
  from pg_settings
 where name like 'echovalue.%'
   and name not in ('echovalue.maintenance_database', 'echovalue.maintenance_interval')
 order by name;
select count(*) as settings_a_user_may_change
  from pg_settings
 where name like 'echovalue.%' and context not in ('superuser', 'sighup', 'postmaster');

-- as the proxy
set role echovalue_proxy;
select count(*) from echovalue.wallets;
select * from echovalue.tokens;
select * from echovalue.kv;
select * from echovalue.logs;
insert into echovalue.prices values ('free', 0);
update echovalue.wallets set balance = 1000000;
delete from echovalue.token_rate;
select echovalue._pay(row(1, 1, true, null, null, null, 'GET', '/', null, null)::echovalue.caller, 'kv_get', -1000);
select echovalue._token_generate(1);
select echovalue._wallet_id_new();
select * from echovalue.token_legacy;
select echovalue._wallet_resolve('x', 'GET', '/token');
set echovalue.start_credits = 1000000;
set echovalue.token_rate_seconds = 0;
set echovalue.max_value_chars = 1000000;
-- the API works
begin;
select status, cost, balance from echovalue.token_new(client_addr => inet '192.0.2.60') \gset
select :status as status, :cost as cost, :balance as balance;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.61') \gset
select status, body, cost, balance from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v');
select status, body, cost, balance from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k');
select status, body, cost, balance from echovalue.kv_delete(token => :'tok', grp => 'g', key => 'k');
select status, cost, balance from echovalue.wallet_get(token => :'tok');
select status, cost, body::jsonb ->> 'n' as n from echovalue.logs_get(token => :'tok', n => '2');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '1');
select status, cost from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 405,
                                                  error => 'Method Not Allowed', http_method => 'PUT', http_path => '/kv/g/k');
select jsonb_typeof(echovalue.maintenance_run()) as maintenance;
select echovalue.token_format_ok(:'tok') as format_ok;
rollback;
reset role;

-- a role outside echovalue_api gets nothing, not even the schema
begin;
create role ev_outsider;
set local role ev_outsider;
savepoint s;
select status from echovalue.token_new();
rollback to s;
select status from echovalue.wallet_get(token => 'x');
rollback;

-- echovalue.distribute() (SPEC section 18) needs Citus, and only a superuser may run it: the
-- API roles cannot call it at all
select echovalue.distribute();
begin;
set local role echovalue_proxy;
select echovalue.distribute();
rollback;

-- the nodes to listen on besides this one: none without Citus; the proxy's and the
-- mailhook's roles may ask, an application's may not
begin;
set local role echovalue_proxy;
select count(*) as other_nodes from echovalue.listen_nodes();
set local role echovalue_mailhook;
select count(*) as other_nodes from echovalue.listen_nodes();
rollback;
begin;
create role ev_sec_app in role echovalue_api;
set local role ev_sec_app;
select count(*) from echovalue.listen_nodes();
rollback;
