-- Stripe events: record once, apply once, keep what cannot be applied; the worker role.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.50') \gset
select id as w, hash as wallet_hash from echovalue.wallets
 where id = (select wallet_id from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8'))) \gset
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_1', stripe_link_id = 'plink_one' where amount = 1;
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_3', stripe_link_id = 'plink_three' where amount = 3;

-- A checkout.session event as Stripe sends it (only the fields echovalue reads, plus a few).
create function pg_temp.session_event(p_id text, p_type text, p_session text, p_ref text,
                                      p_link text, p_status text) returns text
language sql as $$
    select jsonb_build_object(
        'id', p_id, 'object', 'event', 'type', p_type, 'created', 1700000000,
        'livemode', false, 'pending_webhooks', 1, 'api_version', '2024-06-20',
        'data', jsonb_build_object('object', jsonb_build_object(
            'id', p_session, 'object', 'checkout.session', 'client_reference_id', p_ref,
            'payment_link', p_link, 'payment_status', p_status, 'amount_total', 100,
            'currency', 'eur')))::text
$$;

-- happy path: recorded once, applied once, logged on endpoint recharge with cost 0
select status, body, content_type, cost, balance
  from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_paid', 'checkout.session.completed', 'cs_1', :'wallet_hash', 'plink_one', 'paid'));
select id, type, session_id, wallet_hash = :'wallet_hash' as hash_ok, payment_link, payment_status,
       state, http_method, http_path
  from echovalue.stripe_events order by id;
-- the same event again (Stripe retries): acknowledged, not stored twice
select status, body from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_paid', 'checkout.session.completed', 'cs_1', :'wallet_hash', 'plink_one', 'paid'));
select count(*) from echovalue.stripe_events where id = 'evt_paid';
select event_id, state, credits from echovalue.stripe_event_apply();
-- nothing left: no row
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;
select state, detail, wallet_id = :w as wallet_ok, credits, applied is not null as applied
  from echovalue.stripe_events where id = 'evt_paid';
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w order by id;
-- the same event recorded after it was applied changes nothing
select status, body from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_paid', 'checkout.session.completed', 'cs_1', :'wallet_hash', 'plink_one', 'paid'));
select event_id, state from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;

-- async payment: completed unpaid is kept as unpaid; async_payment_succeeded credits tier 3
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_async_1', 'checkout.session.completed', 'cs_2', :'wallet_hash', 'plink_three', 'unpaid'));
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_async_2', 'checkout.session.async_payment_succeeded', 'cs_2', :'wallet_hash', 'plink_three', 'paid'));
select event_id, state, credits from echovalue.stripe_event_apply();
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;
-- a second paid event of an already credited session grants nothing
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_async_3', 'checkout.session.completed', 'cs_2', :'wallet_hash', 'plink_three', 'paid'));
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;

-- kept and visible: unknown wallet, unknown tier, other event types
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_nowallet', 'checkout.session.completed', 'cs_3', repeat('0', 64), 'plink_one', 'paid'));
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_notier', 'checkout.session.completed', 'cs_4', :'wallet_hash', 'plink_other', 'paid'));
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_noref', 'checkout.session.completed', 'cs_5', null, 'plink_one', 'paid'));
select status from echovalue.stripe_event_record(
    payload => '{"id":"evt_other","type":"customer.created","data":{"object":{"id":"cus_1"}}}');
select event_id, state, credits from echovalue.stripe_event_apply();
select event_id, state, credits from echovalue.stripe_event_apply();
select event_id, state, credits from echovalue.stripe_event_apply();
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;
select id, type, state, detail from echovalue.stripe_events_unapplied;
select id, state, detail from echovalue.stripe_events where state = 'ignored' order by id;

-- the operator fixes the tier and retries: applied once
update echovalue.recharge_tiers set stripe_link_id = 'plink_other' where amount = 3;
select echovalue.stripe_event_retry(event_id => 'evt_notier');
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;
select count(*) as recharge_logs from echovalue.logs where wallet_id = :w and endpoint = 'recharge';
select id, state from echovalue.stripe_events_unapplied;

-- retry is refused for events that are not stuck
savepoint refused;
select echovalue.stripe_event_retry(event_id => 'evt_paid');
rollback to savepoint refused;
select echovalue.stripe_event_retry(event_id => 'evt_async_1');
rollback to savepoint refused;
select echovalue.stripe_event_retry(event_id => 'evt_nope');
rollback to savepoint refused;

-- an error while applying marks the event failed, credits nothing and keeps the queue moving
update echovalue.wallets set balance = 9223372036854775000 where id = :w;
select status from echovalue.stripe_event_record(payload => pg_temp.session_event(
      'evt_overflow', 'checkout.session.completed', 'cs_6', :'wallet_hash', 'plink_one', 'paid'));
select event_id, state, credits from echovalue.stripe_event_apply();
select state, detail from echovalue.stripe_events_unapplied where id = 'evt_overflow';
select balance, (select count(*) from echovalue.logs l where l.wallet_id = :w and l.endpoint = 'recharge') as recharge_logs
  from echovalue.wallets where id = :w;
update echovalue.wallets set balance = 100 where id = :w;
select echovalue.stripe_event_retry(event_id => 'evt_overflow');
select event_id, state, credits from echovalue.stripe_event_apply();
select balance from echovalue.wallets where id = :w;

-- rejected payloads: 400, nothing stored
select status, body, cost, balance from echovalue.stripe_event_record(payload => 'not json');
select status, body from echovalue.stripe_event_record(payload => '[1,2]');
-- a number out of range, nesting too deep: refused as not an event, never an error
select status, body from echovalue.stripe_event_record(payload => '{"id":"evt_big","type":"x","n":1e1000000}');
select status, body from echovalue.stripe_event_record(payload => repeat('{"a":', 200000) || '1' || repeat('}', 200000));
select status, body from echovalue.stripe_event_record(payload => '{"type":"checkout.session.completed"}');
select status, body from echovalue.stripe_event_record(payload => '{"id":"evt_x"}');
select status, body from echovalue.stripe_event_record(payload => '{"id":7,"type":"x"}');
select status, body from echovalue.stripe_event_record(payload => '{"id":"","type":"x"}');
select status, body from echovalue.stripe_event_record(payload => '{"id":"evt_nul","type":"x\u0000"}');
select count(*) as events from echovalue.stripe_events;

-- a tier's payment link is unique
update echovalue.recharge_tiers set stripe_link_id = 'plink_one' where amount = 3;
rollback;

-- roles: the proxy may only record, the worker may only apply; neither reads the table
begin;
set local role echovalue_proxy;
select status from echovalue.stripe_event_record(payload => '{"id":"evt_role","type":"x"}');
select * from echovalue.stripe_event_apply();
rollback;
begin;
set local role echovalue_mailhook;
select * from echovalue.stripe_event_apply();
select status from echovalue.stripe_event_record(payload => '{"id":"evt_role","type":"x"}');
rollback;
begin;
set local role echovalue_mailhook;
select count(*) from echovalue.stripe_events;
rollback;
begin;
set local role echovalue_mailhook;
select echovalue.stripe_event_retry(event_id => 'evt_role');
rollback;
begin;
set local role echovalue_proxy;
select * from echovalue.stripe_events_unapplied;
rollback;
