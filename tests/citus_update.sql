-- The update check of the scale-out suite (tests/citus.sh, suite `update`), run by psql on the
-- coordinator of a database of its own (ev_up) where Citus is set up and the workers added:
-- the last released version (:old, kept in tests/upgrade/) is installed and distributed and
-- given a wallet with a key and a webhook; then `alter extension echovalue update` (Citus runs
-- it on the workers too) and echovalue.distribute() again, as the README says. One line per
-- check: `ok    <what>` or `FAIL  <what>`. tests/citus.sh then compares the functions with
-- the fresh install's on every node and runs the routing check here.
\set ON_ERROR_STOP 1
set client_min_messages = warning;
set echovalue.token_rate_seconds = 0;
create extension echovalue version :'old';
select echovalue.distribute() \g /dev/null

-- a wallet made before the update: a key, and a webhook whose address takes mail
select body as tok from echovalue.token_new(client_addr => '198.51.100.250') \gset
select status from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'before',
                                    wallet => echovalue.token_wallet(:'tok')) \g /dev/null
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/hook"}',
                                         wallet => echovalue.token_wallet(:'tok')) \g /dev/null
select body::json ->> 'email' as email
  from echovalue.webhook_get(token => :'tok', wallet => echovalue.token_wallet(:'tok')) \gset

alter extension echovalue update;
select echovalue.distribute() as again \gset

create temp table checks (what text, passed boolean);
insert into checks
select 'the extension is ' || :'new' || ' on every node',
       (select e.extversion from pg_catalog.pg_extension e where e.extname = 'echovalue') = :'new'
       and (select pg_catalog.bool_and(r.success and r.result = :'new')
              from run_command_on_workers($$select extversion from pg_catalog.pg_extension
                                             where extname = 'echovalue'$$) r);
insert into checks
select 'distribute() again delegates every routed function: ' || :'again',
       not exists (select from echovalue._routed_functions() f
                    where not exists (select from pg_catalog.pg_dist_object o
                                       where o.classid = 'pg_catalog.pg_proc'::regclass
                                         and o.objid = f.f and o.distribution_argument_index is not null));
insert into checks
select 'no function the update dropped is left in Citus''s distributed objects',
       not exists (select from pg_catalog.pg_dist_object o
                    where o.classid = 'pg_catalog.pg_proc'::regclass
                      and not exists (select from pg_catalog.pg_proc p where p.oid = o.objid));
-- (top-level calls with the routing hint, as the proxy and the mailhook make them: delegated)
select status as read_status, body as read_body
  from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k',
                        wallet => echovalue.token_wallet(:'tok')) \gset
select status as write_status
  from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'after',
                        wallet => echovalue.token_wallet(:'tok')) \gset
select code as mail_code
  from echovalue.mail_rcpt_check(recipient => :'email',
                                 wallet => echovalue.recipient_wallet(:'email')) \gset
insert into checks values
    ('the old wallet reads its key', :read_status = 200 and :'read_body' = 'before'),
    ('the old wallet writes', :write_status = 200),
    ('the old webhook''s address takes mail', :mail_code = 250);

select case when c.passed then 'ok    ' else 'FAIL  ' end || c.what from checks c;
