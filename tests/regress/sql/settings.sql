-- Wallet settings and alerts (SPEC section 14): GET and PUT /token/settings with every refused
-- input, the low-balance alert queued by the charge that crosses the threshold (once per
-- incident, re-armed above it, in every format), the recharge alert, and alert emails through
-- the relay the worker registers.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.webhook_allow_insecure = on;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.90') \gset
select id as w, hash as wallet_hash from echovalue.wallets
 where id = (select wallet_id from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8'))) \gset
update echovalue.wallets set balance = 1000 where id = :w;
delete from echovalue.mail_relay;

-- nothing set: alerts off
select status, content_type, cost, body from echovalue.settings_get(token => :'tok');

-- a Slack alert webhook: stored, shown with its header values redacted
select status, body, cost from echovalue.settings_put(token => :'tok', body =>
    '{"low_balance_threshold":100,"low_balance_webhook":{"url":"http://127.0.0.1:9/alert",'
    '"headers":{"X-Api-Key":"s3cret"},"format":"slack"}}');
select body::jsonb as settings from echovalue.settings_get(token => :'tok');
select endpoint, method, path, status_code from echovalue.logs where wallet_id = :w order by id desc limit 2;

-- the settings scope sets the threshold and the email; the alert webhook, signed with the
-- wallet's webhook secret, takes the webhook scope too (charged 403 without it)
select (echovalue.token_key_create(token => :'tok', spec => '{"scopes":["settings"]}')).body::json ->> 'token' as settings_only \gset
select (echovalue.token_key_create(token => :'tok', spec => '{"scopes":["settings","webhook"]}')).body::json ->> 'token' as settings_and_webhook \gset
select status, body, cost from echovalue.settings_put(token => :'settings_only', body =>
    '{"low_balance_threshold":100,"low_balance_webhook":{"url":"https://attacker.example/",'
    '"format":"custom","template":{"externalMessageId":"{{wallet}}"}}}');
select status, body from echovalue.settings_put(token => :'settings_only', body =>
    '{"low_balance_threshold":100,"low_balance_webhook":null}');
select status, body from echovalue.settings_put(token => :'settings_and_webhook', body =>
    '{"low_balance_threshold":100,"low_balance_webhook":{"url":"http://127.0.0.1:9/alert",'
    '"headers":{"X-Api-Key":"s3cret"},"format":"slack"}}');
select body::jsonb -> 'low_balance_webhook' ->> 'url' as url from echovalue.settings_get(token => :'settings_only');

-- refused: 400 with the rule, charged and logged, nothing changed
select b as body, (echovalue.settings_put(token => :'tok', body => b)).body as answer
  from (values ('not json'), ('[1]'), ('{"threshold":5}'),
               ('{"low_balance_threshold":-1}'), ('{"low_balance_threshold":1.5}'),
               ('{"low_balance_threshold":"5"}'), ('{"low_balance_threshold":1e16}'),
               ('{"low_balance_webhook":"http://127.0.0.1:9/"}'),
               ('{"low_balance_webhook":{}}'),
               ('{"low_balance_webhook":{"url":"ftp://example.com/"}}'),
               ('{"low_balance_webhook":{"url":"https://10.0.0.1/"}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","format":"irc"}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","format":"custom"}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","template":{"a":1}}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","format":"custom","template":{"a":"{{wallet"}}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","format":"telegram"}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","headers":{"Host":"x"}}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","schedule":{"cron":"* * * * *","timezone":"UTC"}}}'),
               ('{"low_balance_webhook":{"url":"https://example.com/","includeAttachments":true}}'),
               ('{"low_balance_email":5}'), ('{"low_balance_email":"nobody"}'),
               ('{"low_balance_email":"a@b"}'), ('{"low_balance_email":"a b@example.com"}'),
               ('{"low_balance_email":"a@example.com\r\nBcc: x@example.com"}'),
               ('{"low_balance_email":"' || repeat('a', 65) || '@example.com"}'),
               ('{"low_balance_email":"a@' || repeat('b', 250) || '.com"}'),
               ('{"low_balance_email":"ops@example.com"}')) v(b);
select (body::jsonb) ->> 'low_balance_threshold' as threshold from echovalue.settings_get(token => :'tok');
select status_code, cost, error from echovalue.logs
 where wallet_id = :w and endpoint = 'settings' and status_code = 400 order by id limit 1;

-- the alert: queued by the charge that takes the balance from at least 100 to below it
update echovalue.wallets set balance = 101 where id = :w;
select (echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v')).balance;
select count(*) as alerts from echovalue.deliveries where wallet_id = :w and kind = 'alert';
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
-- (the wallet's hash, random, shown as <hash>)
select kind, webhook, state, replace(body, :'wallet_hash', '<hash>')::jsonb as body
  from echovalue.deliveries where wallet_id = :w and kind = 'alert';
-- once per incident: more charges below the threshold queue nothing
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
select (echovalue.wallet_get(token => :'tok')).balance;
select count(*) as alerts from echovalue.deliveries where wallet_id = :w and kind = 'alert';
-- back at the threshold re-arms it; the next crossing alerts again
update echovalue.wallets set balance = 100 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
select count(*) as alerts from echovalue.deliveries where wallet_id = :w and kind = 'alert';
-- a charge of several credits that jumps over the threshold alerts too (logs of 5 entries)
update echovalue.wallets set balance = 103 where id = :w;
select (echovalue.logs_get(token => :'tok', n => '5')).balance;
select count(*) as alerts from echovalue.deliveries where wallet_id = :w and kind = 'alert';
-- a refused charge (402) takes nothing and alerts nothing
update echovalue.wallets set balance = 0 where id = :w;
update echovalue.wallets set low_balance_threshold = 1 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).status;
select count(*) as alerts from echovalue.deliveries where wallet_id = :w and kind = 'alert';

-- the alert is delivered like every delivery: to the alert webhook, signed with the wallet's
-- secret, its attempts logged as webhook-delivery
update echovalue.wallets set balance = 1000, low_balance_threshold = 100 where id = :w;
select url, headers, secret ~ '^whsec_' as signed, replace(payload, :'wallet_hash', '<hash>')::jsonb as payload
  from echovalue.delivery_claim(batch => 1);
-- a removed alert webhook: its queued alerts fail, logged
select status from echovalue.settings_put(token => :'tok', body => '{"low_balance_threshold":100}');
select count(*) as claimable from echovalue.delivery_claim(batch => 10);
select state, last_error from echovalue.deliveries where wallet_id = :w and kind = 'alert' order by id;
select path ~ '^msg_' as by_webhook_id, endpoint, status_code, error from echovalue.logs
 where wallet_id = :w and endpoint = 'webhook-delivery' order by id desc limit 1;

-- every format, with the alert's own text
update echovalue.wallets set balance = 1000 where id = :w;
create function pg_temp.alert_body(p_webhook text) returns jsonb language plpgsql as $$
declare
    v_tok text := current_setting('ev.tok');
    v_w bigint := current_setting('ev.w')::bigint;
begin
    perform echovalue.settings_put(token => v_tok,
        body => '{"low_balance_threshold":100,"low_balance_webhook":' || p_webhook || '}');
    update echovalue.wallets set balance = 100 where id = v_w;
    perform echovalue.kv_get(token => v_tok, grp => 'g', key => 'k');
    return (select pg_catalog.replace(d.body, current_setting('ev.hash'), '<hash>')::jsonb
              from echovalue.deliveries d
             where d.wallet_id = v_w and d.kind = 'alert' order by d.id desc limit 1);
end;
$$;
select set_config('ev.tok', :'tok', true), set_config('ev.w', :'w', true),
       set_config('ev.hash', :'wallet_hash', true) \gset
select f, pg_temp.alert_body(f) as body
  from (values ('{"url":"http://127.0.0.1:9/a"}'),
               ('{"url":"http://127.0.0.1:9/a","format":"slack"}'),
               ('{"url":"http://127.0.0.1:9/a","format":"discord"}'),
               ('{"url":"http://127.0.0.1:9/a","format":"teams"}'),
               ('{"url":"http://127.0.0.1:9/a","format":"telegram","options":{"chat_id":"42"}}'),
               ('{"url":"http://127.0.0.1:9/a","format":"pagerduty","options":{"routing_key":"rk"}}'),
               ('{"url":"http://127.0.0.1:9/a","format":"custom","template":{"z":"{{wallet}}","a":["{{threshold}}","{{token_hash}}","{{type}}"],"m":"{{missing|\"none\"}}"}}')) v(f);
-- the template keeps its key order as sent
select replace(body, :'wallet_hash', '<hash>') as body
  from echovalue.deliveries where wallet_id = :w and kind = 'alert' order by id desc limit 1;
select body::jsonb -> 'low_balance_webhook' as shown from echovalue.settings_get(token => :'tok');
select status from echovalue.settings_put(token => :'tok', body =>
       '{"low_balance_webhook":{"url":"http://127.0.0.1:9/a","format":"pagerduty","options":{"routing_key":"rk","severity":"x"}}}');
select body::jsonb -> 'low_balance_webhook' -> 'options' as shown from echovalue.settings_get(token => :'tok');

-- threshold 0 turns alerts off
update echovalue.deliveries set state = 'delivered' where wallet_id = :w;
select status from echovalue.settings_put(token => :'tok', body =>
    '{"low_balance_threshold":0,"low_balance_webhook":{"url":"http://127.0.0.1:9/a"}}');
update echovalue.wallets set balance = 1 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
select count(*) as pending_alerts from echovalue.deliveries where wallet_id = :w and state = 'pending';

-- a recharge queues wallet.recharged (threshold set), through the signed Stripe path
update echovalue.wallets set balance = 1000 where id = :w;
select status from echovalue.settings_put(token => :'tok', body =>
    '{"low_balance_threshold":10,"low_balance_webhook":{"url":"http://127.0.0.1:9/a"}}');
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_1', stripe_link_id = 'plink_alert' where amount = 1;
select status from echovalue.stripe_event_record(payload => jsonb_build_object(
    'id', 'evt_alert', 'object', 'event', 'type', 'checkout.session.completed',
    'data', jsonb_build_object('object', jsonb_build_object(
        'id', 'cs_alert', 'object', 'checkout.session', 'client_reference_id', :'wallet_hash',
        'payment_link', 'plink_alert', 'payment_status', 'paid')))::text);
select state, credits from echovalue.stripe_event_apply();
select body::jsonb - 'token_hash' as body, body::jsonb ->> 'token_hash' = :'wallet_hash' as hash_ok
  from echovalue.deliveries where wallet_id = :w and state = 'pending';

-- email alerts need the relay the worker registers; the worker role may, the API role not
savepoint roles;
set local role echovalue_proxy;
select echovalue.relay_register('alerts@example.net');
rollback to roles;
select echovalue.relay_register('not an address');
rollback to roles;
select echovalue.relay_register('alerts@example.net');
select from_address from echovalue.mail_relay;
select status, body from echovalue.settings_put(token => :'tok', body =>
    '{"low_balance_threshold":100,"low_balance_email":"ops@example.com"}');
select body::jsonb ->> 'low_balance_email' as email from echovalue.settings_get(token => :'tok');
update echovalue.deliveries set state = 'delivered' where wallet_id = :w;
update echovalue.wallets set balance = 100 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
select kind, body::jsonb - 'text' as body, replace(body::jsonb ->> 'text', :'wallet_hash', '<hash>') as text
  from echovalue.deliveries where wallet_id = :w and state = 'pending';
-- the webhook dispatcher never takes an email; the email worker takes only emails
select count(*) as webhook_jobs from echovalue.delivery_claim(batch => 10);
select attempt, message_id ~ '^msg_' as has_id, recipient, subject from echovalue.alert_email_claim(batch => 10);
select count(*) as leased_again from echovalue.alert_email_claim(batch => 10);
-- each attempt logged under email, SMTP, with the relay's reply code
select d.id as mail_id from echovalue.deliveries d where d.wallet_id = :w and d.kind = 'alert_email' \gset
select echovalue.delivery_record(delivery_id => :mail_id, attempt => 1, outcome => 'retry',
       status_code => 451, error => 'relay busy', retry_seconds => 0);
select attempt from echovalue.alert_email_claim(batch => 10);
select echovalue.delivery_record(delivery_id => :mail_id, attempt => 2, outcome => 'delivered', status_code => 250);
select endpoint, method, path ~ '^msg_' as by_message_id, status_code, error, cost from echovalue.logs
 where wallet_id = :w and method = 'SMTP' order by id;
-- without a relay, no email is queued (it could never leave) and none can be set
select echovalue.relay_register(null);
update echovalue.wallets set balance = 100 where id = :w;
select (echovalue.kv_get(token => :'tok', grp => 'g', key => 'k')).balance;
select count(*) as pending_emails from echovalue.deliveries where wallet_id = :w and state = 'pending';
select body from echovalue.settings_put(token => :'tok', body => '{"low_balance_email":"ops@example.com"}');

-- every charge alerts the same way: mail to the wallet's address, and a scheduled run
update echovalue.wallets set balance = 1000 where id = :w;
select status from echovalue.settings_put(token => :'tok', body =>
    '{"low_balance_threshold":100,"low_balance_webhook":{"url":"http://127.0.0.1:9/a"}}');
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9/m"}');
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'tick',
       body => '{"url":"http://127.0.0.1:9/t","schedule":{"cron":"* * * * *","timezone":"UTC"}}');
update echovalue.deliveries set state = 'delivered' where wallet_id = :w;
update echovalue.wallets set balance = 100 where id = :w;
select code from echovalue.mail_receive(recipient => :'tok' || '@localhost', message_id => 'm@test',
    from_email => 'a@example.com', from_name => 'A', subject => 's', text_body => 't', html_body => null,
    headers => '{}', size_bytes => 10);
select balance, (select count(*) from echovalue.deliveries d
                  where d.wallet_id = :w and d.kind = 'alert' and d.state = 'pending') as alerts
  from echovalue.wallets where id = :w;
update echovalue.deliveries set state = 'delivered' where wallet_id = :w;
update echovalue.wallets set balance = 101 where id = :w;
update echovalue.webhooks set next_run_at = now() - interval '1 minute' where wallet_id = :w and name = 'tick';
select echovalue.schedule_claim() >= 1 as planned;
select balance, (select count(*) from echovalue.deliveries d
                  where d.wallet_id = :w and d.kind = 'alert' and d.state = 'pending') as alerts
  from echovalue.wallets where id = :w;

-- only the worker may claim emails or register the relay; a bad claim is an error
savepoint roles;
set local role echovalue_proxy;
select * from echovalue.alert_email_claim();
rollback to roles;
select * from echovalue.alert_email_claim(batch => 0);
rollback to roles;
rollback;
