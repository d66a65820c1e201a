-- Scheduled webhooks (SPEC §13): cron and time zones (a Rome schedule across both DST
-- changes), the 30-day rules, the scheduled mode of a webhook (PUT, PATCH, pause, back to
-- mailbox), and planning runs: missed occurrences collapse into one, charged and queued once,
-- an empty wallet skips and logs, a paused schedule never runs.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.webhook_allow_insecure = on;
set local timezone = 'UTC';
update echovalue.deliveries set state = 'failed' where state = 'pending';
update echovalue.webhooks set next_run_at = null where next_run_at is not null;

-- 30 2 * * * in Rome: 29 March 2026 has no 02:30 (it runs at 03:00 CEST); 25 October has two
-- (it runs once, the first); 09:00 stays 09:00 on both sides of each change
select t as after, echovalue.schedule_next('30 2 * * *', 'Europe/Rome', t) as next_run
  from unnest(array['2026-03-28 12:00Z', '2026-03-29 12:00Z', '2026-10-24 12:00Z',
                    '2026-10-25 00:30Z', '2026-10-25 12:00Z']::timestamptz[]) t;
select t as after, echovalue.schedule_next('0 9 * * *', 'Europe/Rome', t) as next_run
  from unnest(array['2026-03-28 12:00Z', '2026-03-29 00:00Z', '2026-10-25 00:00Z']::timestamptz[]) t;
select echovalue.schedule_next('*/5 * * * *', 'UTC', '2026-01-01 10:02:03.456789Z') as every_5,
       echovalue.schedule_next('0 9 * * MON-FRI', 'Europe/Rome', '2026-12-04 09:00Z') as weekday_9,
       echovalue.schedule_latest('*/5 * * * *', 'UTC', '2026-01-01 10:09:59Z') as latest,
       echovalue.schedule_next('0 9 * * *', 'Mars/Olympus', now()) as bad_zone,
       echovalue.schedule_next('nope', 'UTC', now()) as bad_cron;
-- the rules
select c.cron, c.zone, echovalue._schedule_error(c.cron, c.zone, '2026-01-15 00:00Z') as refused
  from (values ('*/5 * * * *', 'UTC'), ('0 9 * * 1-5', 'Europe/Rome'), ('0 0 31 * *', 'UTC'),
               ('0 0 1 * *', 'UTC'), ('0 0 1 6 *', 'UTC'), ('0 0 30 2 *', 'UTC'),
               ('0 9 * * *', 'Europe/Nowhere'), ('0 9 * * *', ''), ('* * * * * *', 'UTC'),
               ('@hourly', 'UTC'), ('61 * * * *', 'UTC'), (repeat('1,', 60) || '1 * * * *', 'UTC'))
       as c(cron, zone);

select body as tok from echovalue.token_new(client_addr => inet '192.0.2.91') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
update echovalue.wallets set balance = 100 where id = :w;

-- a scheduled webhook: schedule instead of an address; both modes at once is refused
select status, body::jsonb - 'created' - 'updated' - 'hash' #- '{schedule,nextRunAt}' as response,
       (body::json #>> '{schedule,nextRunAt}')::timestamptz
           = echovalue.schedule_next('*/5 * * * *', 'Europe/Rome', now()) as next_planned
  from echovalue.webhook_put(token => :'tok', webhook_id => 'tick',
       body => '{"url":"http://127.0.0.1:9/tick","schedule":{"cron":"*/5 * * * *","timezone":"Europe/Rome"}}');
select b.body as refused_body, o.status, o.body
  from (values ('{"url":"https://a.example.com/","format":"slack","schedule":{"cron":"* * * * *","timezone":"UTC"}}'),
               ('{"url":"https://a.example.com/","includeAttachments":false,"schedule":{"cron":"* * * * *","timezone":"UTC"}}'),
               ('{"url":"https://a.example.com/","schedule":"* * * * *"}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":"* * * * *"}}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":5,"timezone":"UTC"}}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":"* * * * *","timezone":"UTC","active":"yes"}}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":"* * * * *","timezone":"UTC","every":1}}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":"0 0 31 * *","timezone":"UTC"}}'),
               ('{"url":"https://a.example.com/","schedule":{"cron":"0 9 * * *","timezone":"Rome"}}')) as b(body),
       lateral echovalue.webhook_put(token => :'tok', webhook_id => 'bad', body => b.body) o;
-- pause: no next run; resume: planned again from now
select body::json -> 'schedule' ->> 'active' as active, body::json -> 'schedule' ->> 'nextRunAt' as next_run
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick', body => '{"schedule":{"active":false}}');
select body::json -> 'schedule' ->> 'cron' as cron, (body::json #>> '{schedule,nextRunAt}') is not null as planned
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick', body => '{"schedule":{"active":true}}');
-- no mail to a scheduled webhook; back to mailbox mode: its address comes back
select mailbox as tick_mb from echovalue.webhooks where wallet_id = :w and name = 'tick' \gset
select code, message from echovalue.mail_rcpt_check(:'tick_mb' || '@localhost');
select status, body from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick', body => '{"format":"slack"}');
select body::json ->> 'email' = :'tick_mb' || '@localhost' as same_address, body::json -> 'schedule' as schedule
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick', body => '{"schedule":null}');
select code from echovalue.mail_rcpt_check(:'tick_mb' || '@localhost');
select status from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick',
       body => '{"schedule":{"cron":"*/5 * * * *","timezone":"UTC"}}');

-- 10 minutes of downtime: the missed occurrences collapse into one run for the latest
update echovalue.webhooks set next_run_at = now() - interval '10 minutes' where wallet_id = :w and name = 'tick';
select echovalue.schedule_next_due() <= now() as due;
select echovalue.schedule_claim() as planned;
select echovalue.schedule_claim() as planned_again;
select d.kind, d.scheduled_for = echovalue.schedule_latest('*/5 * * * *', 'UTC', now()) as latest_missed,
       d.body::jsonb - 'scheduledFor' - 'executedAt' - 'walletHash' as body, d.state
  from echovalue.deliveries d where d.wallet_id = :w;
select h.next_run_at > now() as next_planned, h.last_run_at = now() as ran_now, h.last_status
  from echovalue.webhooks h where h.wallet_id = :w and h.name = 'tick';
select method, path, endpoint, status_code, cost, balance from echovalue.logs
 where wallet_id = :w order by id desc limit 1;
-- the run is delivered like any delivery; its outcome shows on the webhook
select delivery_id as run, url, payload::jsonb ->> 'type' as type from echovalue.delivery_claim(batch => 10) \gset
select :'url' as url, :'type' as type;
select echovalue.delivery_record(delivery_id => :run, attempt => 1, outcome => 'retry', status_code => 500,
       error => 'HTTP 500', retry_seconds => 60);
select body::json -> 'schedule' ->> 'lastStatus' as last_status, body::json -> 'schedule' ->> 'lastError' as last_error
  from echovalue.webhook_show(token => :'tok', webhook_id => 'tick');
select echovalue.delivery_record(delivery_id => :run, attempt => 1, outcome => 'delivered', status_code => 200);
select body::json -> 'schedule' ->> 'lastStatus' as last_status from echovalue.webhook_show(token => :'tok', webhook_id => 'tick');
-- one run per occurrence: the unique key refuses a second
savepoint twice;
insert into echovalue.deliveries (wallet_id, webhook, kind, body, scheduled_for)
select wallet_id, webhook, kind, body, scheduled_for from echovalue.deliveries where id = :run;
rollback to savepoint twice;

-- an empty wallet: skipped, a failure with the reason, logged as a 402, the next run planned
-- (the run above purged, so the same latest occurrence is due again whatever the clock says)
delete from echovalue.deliveries where wallet_id = :w and kind = 'scheduled';
update echovalue.wallets set balance = 1 where id = :w;
update echovalue.webhooks set next_run_at = now() - interval '1 minute' where wallet_id = :w and name = 'tick';
select echovalue.schedule_claim() as planned;
select count(*) as runs from echovalue.deliveries where wallet_id = :w and kind = 'scheduled';
select h.last_status, h.last_error, h.next_run_at > now() as next_planned
  from echovalue.webhooks h where h.wallet_id = :w and h.name = 'tick';
select method, path, endpoint, status_code, error, cost, balance from echovalue.logs
 where wallet_id = :w order by id desc limit 1;
-- still unpaid at the next run: skipped again without another 402, and the wallet's
-- last_used does not move (a wallet kept only by its schedules is purged when inactive)
select last_used as lu from echovalue.wallets where id = :w \gset
update echovalue.webhooks set next_run_at = now() - interval '1 second' where wallet_id = :w and name = 'tick';
select echovalue.schedule_claim() as planned;
select count(*) as logged_402 from echovalue.logs where wallet_id = :w and method = 'CRON' and status_code = 402;
select last_used = :'lu' as last_used_kept, balance from echovalue.wallets where id = :w;
-- an error planning one webhook is recorded on it alone, and it is tried again in a minute
update echovalue.wallets set balance = 100 where id = :w;
select body as tok2 from echovalue.token_new(client_addr => inet '192.0.2.92') \gset
select status from echovalue.webhook_put(token => :'tok2', webhook_id => 'other',
       body => '{"url":"http://127.0.0.1:9/other","schedule":{"cron":"*/5 * * * *","timezone":"UTC"}}');
update echovalue.webhooks set next_run_at = now() - interval '1 second'
 where name in ('tick', 'other') and wallet_id in (select wallet_id from echovalue.tokens
                                                    where hash in (sha256(convert_to(:'tok', 'UTF8')), sha256(convert_to(:'tok2', 'UTF8'))));
create function public.ev_refuse_tick() returns trigger language plpgsql as $$
begin
    raise exception 'refused for the test';
end;
$$;
create trigger ev_refuse_tick before insert on echovalue.deliveries
    for each row when (new.webhook = 'tick') execute function public.ev_refuse_tick();
set local client_min_messages = error;   -- its warning names the wallet id
select echovalue.schedule_claim() as planned;
reset client_min_messages;
drop trigger ev_refuse_tick on echovalue.deliveries;
select name, last_status, last_error, next_run_at between now() + interval '59 seconds' and now() + interval '61 seconds' as in_a_minute
  from echovalue.webhooks where name in ('tick', 'other') and next_run_at is not null order by name;
select count(*) as other_runs from echovalue.deliveries d
  join echovalue.webhooks h on h.wallet_id = d.wallet_id and h.name = d.webhook
 where d.kind = 'scheduled' and h.name = 'other';
-- paused: never due
update echovalue.wallets set balance = 100 where id = :w;
select status from echovalue.webhook_patch(token => :'tok', webhook_id => 'tick', body => '{"schedule":{"active":false}}');
select next_run_at is null as no_next_run from echovalue.webhooks where wallet_id = :w and name = 'tick';
select echovalue.schedule_claim() as planned;
-- its test call sends a sample run
select (echovalue.webhook_test(token => :'tok', webhook_id => 'tick')).status;
select body::jsonb - 'scheduledFor' - 'executedAt' - 'walletHash' as test_body
  from echovalue.deliveries where wallet_id = :w and kind = 'test';
select echovalue.schedule_claim(batch => 0);
rollback;
