-- Creates the extension and the proxy's and mailhook's login roles the other suites use.
\set VERBOSITY terse
create extension if not exists echovalue;
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_proxy') then
        create role echovalue_proxy login in role echovalue_gateway;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'echovalue_mailhook') then
        create role echovalue_mailhook login in role echovalue_worker;
    end if;
end;
$$;
select extname, extversion ~ '^\d+\.\d+\.\d+$' as versioned, n.nspname as schema
  from pg_extension e join pg_namespace n on n.oid = e.extnamespace
 where extname = 'echovalue';
select pg_has_role('echovalue_proxy', 'echovalue_api', 'member') as proxy_is_api_member;
select pg_has_role('echovalue_proxy', 'echovalue_gateway', 'member') as proxy_is_gateway_member;
select pg_has_role('echovalue_mailhook', 'echovalue_worker', 'member') as mailhook_is_worker_member;
