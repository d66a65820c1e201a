-- A normalized description of everything the echovalue extension owns, for comparing an
-- upgraded database with a fresh install: equal output means the upgrade script is complete.
-- Names and definitions only, never OIDs or column positions.
\pset format unaligned
\pset tuples_only on
\pset pager off

-- functions: signature, definition, volatility, security, settings, privileges
select 'function', p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)), p.provolatile,
       p.prosecdef, p.proconfig::text,
       (select string_agg(a.grantee::regrole::text || ':' || a.privilege_type, ',' order by 1)
          from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a)
  from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace
 order by 2;

-- tables, views, sequences, indexes: kind, options, privileges
select 'relation', c.relname, c.relkind, c.reloptions::text,
       (select string_agg(a.grantee::regrole::text || ':' || a.privilege_type, ',' order by 1)
          from aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a)
  from pg_class c
 where c.relnamespace = 'echovalue'::regnamespace and c.relkind in ('r', 'v', 'S', 'i', 'm')
 order by 2;

-- columns, by name (an added column sits at another position, which nothing relies on)
select 'column', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       a.attidentity, pg_get_expr(d.adbin, d.adrelid)
  from pg_class c
  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
  left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
 where c.relnamespace = 'echovalue'::regnamespace and c.relkind in ('r', 'v', 'c')
 order by 2, 3;

select 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
  from pg_index i join pg_class c on c.oid = i.indrelid
 where c.relnamespace = 'echovalue'::regnamespace
 order by 2;

select 'constraint', c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
  from pg_constraint c
 where c.connamespace = 'echovalue'::regnamespace
 order by 2, 3;

select 'view', c.relname, md5(pg_get_viewdef(c.oid))
  from pg_class c
 where c.relnamespace = 'echovalue'::regnamespace and c.relkind = 'v'
 order by 2;

select 'trigger', t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
  from pg_trigger t join pg_class c on c.oid = t.tgrelid
 where c.relnamespace = 'echovalue'::regnamespace and not t.tgisinternal
 order by 2, 3;

-- what pg_dump keeps, and that every object belongs to the extension
select 'config_dump', x.c::regclass::text
  from pg_extension e, unnest(e.extconfig) x(c)
 where e.extname = 'echovalue'
 order by 2;
select 'member', d.classid::regclass::text, count(*)
  from pg_depend d join pg_extension e on e.oid = d.refobjid
 where e.extname = 'echovalue' and d.deptype = 'e'
 group by 2
 order by 2;

-- operator data the extension ships
select 'price', operation, credits, endpoint from echovalue.prices order by 2;
select 'tier', amount, credits, link, stripe_link_id from echovalue.recharge_tiers order by 2;
