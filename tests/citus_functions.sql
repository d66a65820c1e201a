-- Every function of echovalue on this node, with its definition and settings (plan_cache_mode
-- among them), as one digest: tests/citus.sh's update suite compares an updated install's
-- with a fresh one's, node by node.
select pg_catalog.md5(pg_catalog.string_agg(
           p.oid::regprocedure::text || ' ' || pg_catalog.pg_get_functiondef(p.oid)
           || ' ' || coalesce(p.proconfig::text, ''), E'\n' order by p.oid::regprocedure::text))
  from pg_catalog.pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace and p.prokind = 'f';
