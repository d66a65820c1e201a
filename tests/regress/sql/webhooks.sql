-- Named webhooks (SPEC §12): PUT/GET/PATCH/DELETE /webhook/{webhookId}, webhookId in POST
-- /webhook, GET /webhook's list, each refused field (charged and logged), the webhook limit,
-- mail routed to a named webhook's own address, includeAttachments false, and the formats
-- with exact bodies: slack, discord, teams, telegram, pagerduty and custom templates.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.webhook_allow_insecure = on;
set local echovalue.public_url = 'https://api.example.org';
update echovalue.deliveries set state = 'failed' where state = 'pending';
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.90') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
update echovalue.wallets set balance = 1000 where id = :w;

-- PUT creates: the WebhookResponse, its own opaque address (not the wallet's mailbox)
select status, cost, balance, content_type,
       (select string_agg(k, ',') from json_object_keys(body::json) k) as fields
  from echovalue.webhook_put(token => :'tok', webhook_id => 'alerts',
       body => '{"url":"https://hooks.slack.com/services/T0/B0/x","format":"slack","headers":{"X-Key":"k1"}}');
select r.body::jsonb - 'email' - 'created' - 'updated' - 'hash' as response,
       r.body::json->>'email' ~ ('^' || echovalue._wallet_key(:w) || '[0-9a-f]{24}@localhost$') as email_opaque,
       r.body::json->>'email' <> (select mailbox || '@localhost' from echovalue.mailboxes where wallet_id = :w) as own_address,
       r.body::json->>'hash' = encode(sha256(convert_to(:'tok', 'UTF8')), 'hex') as hash_ok
  from echovalue.webhook_show(token => :'tok', webhook_id => 'alerts') r;
select mailbox as alerts_mb from echovalue.webhooks where wallet_id = :w and name = 'alerts' \gset
-- POST with webhookId names a webhook; without, `default` (the seeds' one)
select status, body from echovalue.webhook_set(token => :'tok',
       body => '{"webhookId":"ci-1","url":"https://ci.example.com/hook","includeAttachments":false}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9/default"}');
select name, url, format, include_attachments, mailbox is null as uses_wallet_mailbox
  from echovalue.webhooks where wallet_id = :w order by name;
-- GET /webhook: the seed object of default, then every webhook by webhookId
select (select string_agg(k, ',') from json_object_keys(body::json) k) as fields,
       body::json->>'webhook' as default_url,
       (select string_agg(x->>'webhookId' || ':' || (x->>'format'), ',')
          from json_array_elements(body::json->'webhooks') x) as webhooks
  from echovalue.webhook_get(token => :'tok');
-- PUT replaces (same address), PATCH changes only what it names
select body::json->>'format' as format, body::json->'headers' as headers,
       (select mailbox from echovalue.webhooks where wallet_id = :w and name = 'alerts') = :'alerts_mb' as same_address
  from echovalue.webhook_put(token => :'tok', webhook_id => 'alerts',
       body => '{"webhookId":"alerts","url":"https://discord.com/api/webhooks/1/x","format":"discord"}');
select body::jsonb - 'email' - 'created' - 'updated' - 'hash' as patched
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'alerts',
       body => '{"options":{"chat_id":"-100123","bot_token":"123:abc","api_key":"z","routing_key":"r","note":"plain"}}');
select body::jsonb - 'email' - 'created' - 'updated' - 'hash' as patched
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'alerts',
       body => '{"format":"custom","template":{"z":"{{subject}}","a":["{{from.email}}"]}}');
-- the template is kept as written (keys in the user's order); a format other than custom drops it
select template::text as stored_template from echovalue.webhooks where wallet_id = :w and name = 'alerts';
select body::json->'template' as template, body::json->>'format' as format
  from echovalue.webhook_patch(token => :'tok', webhook_id => 'alerts', body => '{"format":"teams"}');
select status, body from echovalue.webhook_patch(token => :'tok', webhook_id => 'nope', body => '{"format":"teams"}');
select status, body from echovalue.webhook_show(token => :'tok', webhook_id => 'nope');

-- refused: each a 400 with its rule, charged 1 credit and logged; nothing changes
select balance as before from echovalue.wallets where id = :w \gset
create temp table bad (id text, body text);
insert into bad values
    ('call', '{"url":"https://a.example.com/"}'),
    ('has space', '{"url":"https://a.example.com/"}'),
    (repeat('x', 31), '{"url":"https://a.example.com/"}'),
    ('ok', '{"webhookId":"other","url":"https://a.example.com/"}'),
    ('ok', '{"webhookId":7,"url":"https://a.example.com/"}'),
    ('ok', '[1]'),
    ('ok', 'not json'),
    ('ok', '{"url":"https://a.example.com/","schedule":{"cron":"* * * * *"}}'),
    ('ok', '{"headers":{}}'),
    ('ok', '{"url":"https://10.0.0.1/"}'),
    ('ok', '{"url":"https://a.example.com/","format":"email"}'),
    ('ok', '{"url":"https://a.example.com/","format":1}'),
    ('ok', '{"url":"https://a.example.com/","format":"custom"}'),
    ('ok', '{"url":"https://a.example.com/","format":"slack","template":{"a":1}}'),
    ('ok', '{"url":"https://a.example.com/","format":"custom","template":"' || repeat('x', 2047) || '"}'),
    ('ok', '{"url":"https://a.example.com/","format":"custom","template":[[[[[["deep"]]]]]]}'),
    ('ok', '{"url":"https://a.example.com/","format":"custom","template":{"a":"{{from.email"}}'),
    ('ok', '{"url":"https://a.example.com/","format":"custom","template":{"a":"{{a[x]}}"}}'),
    ('ok', '{"url":"https://a.example.com/","options":[]}'),
    ('ok', '{"url":"https://a.example.com/","options":{"a":1}}'),
    ('ok', '{"url":"https://a.example.com/","options":{"a":"' || repeat('v', 501) || '"}}'),
    ('ok', '{"url":"https://a.example.com/","options":{"bad key":"v"}}'),
    ('ok', '{"url":"https://a.example.com/","options":{"a":"1","b":"2","c":"3","d":"4","e":"5","f":"6","g":"7","h":"8","i":"9","j":"10","k":"11"}}'),
    ('ok', '{"url":"https://a.example.com/","format":"telegram"}'),
    ('ok', '{"url":"https://a.example.com/","format":"telegram","options":{"chat_id":""}}'),
    ('ok', '{"url":"https://a.example.com/","format":"pagerduty","options":{"chat_id":"x"}}'),
    ('ok', '{"url":"https://a.example.com/","includeAttachments":"yes"}'),
    ('ok', '{"url":"https://a.example.com/","headers":{"Content-Type":"x"}}');
select left(b.id, 12) as id, o.status, o.body, o.cost
  from bad b, lateral echovalue.webhook_put(token => :'tok', webhook_id => b.id, body => b.body) o;
select :before - balance as charged from echovalue.wallets where id = :w;
select count(*) as still_three from echovalue.webhooks where wallet_id = :w;
-- a template of exactly 2048 bytes and 5 levels is accepted
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'edge',
       body => '{"url":"https://a.example.com/","format":"custom","template":"' || repeat('x', 2046) || '"}');
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'edge',
       body => '{"url":"https://a.example.com/","format":"custom","template":[[[[["five"]]]]]}');
-- at most echovalue.max_webhooks: the fifth is refused, charged; replacing one still works
set local echovalue.max_webhooks = 4;
select status, body, cost from echovalue.webhook_put(token => :'tok', webhook_id => 'fifth',
       body => '{"url":"https://a.example.com/"}');
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'edge', body => '{"url":"https://b.example.com/"}');
reset echovalue.max_webhooks;
-- DELETE /webhook/{id}: OK, then 404; the seeds' DELETE /webhook removes default only
select status, body, cost from echovalue.webhook_remove(token => :'tok', webhook_id => 'edge');
select status, body, cost from echovalue.webhook_remove(token => :'tok', webhook_id => 'edge');
select method, path, endpoint, status_code, error, cost from echovalue.logs
 where wallet_id = :w and path like '/webhook/edge' order by id desc limit 2;

-- mail: to the named webhook's address, routed to it alone; ci-1 keeps no attachments
select mailbox as ci_mb from echovalue.webhooks where wallet_id = :w and name = 'ci-1' \gset
select code, message from echovalue.mail_rcpt_check(:'ci_mb' || '@localhost');
select code from echovalue.mail_receive(recipient => upper(:'ci_mb') || '@LOCALHOST', message_id => 'ci@example.com',
    from_email => 'ci@example.com', from_name => 'CI', subject => 'build', text_body => 'ok', html_body => null,
    headers => '{}', size_bytes => 100, attachment_filenames => array['log.txt'],
    attachment_content_types => array['text/plain'], attachment_contents => array['\x6869'::bytea]);
select d.webhook, (select count(*) from echovalue.attachments a where a.message_id = d.message_id) as attachments_stored
  from echovalue.deliveries d where d.wallet_id = :w;
select path = :'ci_mb' || '@localhost' as logged_under_its_address, endpoint, cost
  from echovalue.logs where wallet_id = :w and method = 'SMTP';
select url, payload::json->'attachments' as attachments, payload::json->>'subject' as subject
  from echovalue.delivery_claim(batch => 10);
-- an address that no webhook has any more: 550
select code, message from echovalue.mail_rcpt_check(:'alerts_mb' || 'x@localhost');
select status from echovalue.webhook_remove(token => :'tok', webhook_id => 'ci-1');
select code, message from echovalue.mail_rcpt_check(:'ci_mb' || '@localhost');
-- a slack webhook's delivery carries the slack body
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'alerts',
       body => '{"url":"http://127.0.0.1:9/slack","format":"slack"}');
select code from echovalue.mail_receive(recipient => :'alerts_mb' || '@localhost', message_id => 's@example.com',
    from_email => 'ops@example.com', from_name => 'Ops', subject => 'Disk <90%> & rising', text_body => 'see "df"',
    html_body => null, headers => '{}', size_bytes => 100);
select url, payload from echovalue.delivery_claim(batch => 10);

-- the formats, with exact bodies, for a mail with quotes, newlines, <, &, emoji and accents
create temp table mail (payload text);
insert into mail values ('{"externalMessageId":"m1@example.com","receivedAt":"2026-12-01T10:00:00.000000Z",'
    '"from":{"email":"jane@example.com","name":"Jane \"JD\" Doë"},"to":{"hash":"ab"},'
    '"subject":"Q3 <report> & \"plans\" 🚀","text":"Line 1\nLine 2 <b>not bold</b> & more\n",'
    '"html":"<p>ignored</p>","headers":{},"attachments":[{"filename":"a.pdf","contentType":"application/pdf",'
    '"size":3,"downloadUrl":"https://api.example.org/attachments/1?expires=1&sig=x","downloadUrlExpiresAt":"t"},'
    '{"filename":"b.png","contentType":"image/png","size":4,"downloadUrl":"u2","downloadUrlExpiresAt":"t"}]}');
select echovalue._webhook_body('', '{}', null, payload) = payload as raw_is_the_payload from mail;
select echovalue._webhook_body('slack', '{}', null, payload) as slack from mail;
select echovalue._webhook_body('discord', '{}', null, payload) as discord from mail;
select echovalue._webhook_body('teams', '{}', null, payload) as teams from mail;
select echovalue._webhook_body('telegram', '{"chat_id":"-100123"}', null, payload) as telegram from mail;
select echovalue._webhook_body('pagerduty', '{"routing_key":"R0UT1NG"}', null, payload) as pagerduty from mail;
-- custom: dot paths, indexes (negative too), fallbacks, literals, a missing value, non-strings
select echovalue._webhook_body('custom', '{}',
    '{"title":"{{subject}}","who":"{{from.name}} <{{from.email}}>","first":"{{attachments[0].filename}}",'
    '"last":"{{attachments[-1].filename}}","none":"[{{attachments[5].filename}}]","fb":"{{html|text}}",'
    '"lit":"{{missing|\"n/a\"}}","size":"{{attachments[1].size}}","obj":"{{from}}","n":7,"keep":[true,null]}',
    payload) as custom from mail;
-- a message whose source charset was ISO-8859-1 (decoded by the mailhook before it is stored)
select echovalue._webhook_body('teams', '{}', null,
    json_build_object('subject', convert_from('\x436166e920e0206c6120636172746520263c3e'::bytea, 'LATIN1'),
                      'from', json_build_object('email', 'r@example.fr', 'name', convert_from('\x52e96d79'::bytea, 'LATIN1')),
                      'text', convert_from('\x4372e86d65206272fb6ce965'::bytea, 'LATIN1'))::text) as latin1;
-- without a plain-text part the HTML body, tags stripped, is the text; no name: the address alone
select echovalue._webhook_body('slack', '{}', null,
    '{"from":{"email":"x@example.com","name":null},"subject":"","text":null,"html":"<div>Hi&nbsp;<b>there</b></div><style>p{}</style><p>a &amp; b</p>"}') as html_only;
-- discord is cut to 2000 characters, telegram to 4096 without splitting an entity
select char_length((echovalue._webhook_body('discord', '{}', null,
    json_build_object('subject', 's', 'text', repeat('é', 3000))::text)::json)->>'content') as discord_chars;
select char_length((echovalue._webhook_body('telegram', '{"chat_id":"1"}', null,
    json_build_object('subject', 's', 'text', repeat('&', 2000))::text)::json)->>'text') as telegram_chars,
       right((echovalue._webhook_body('telegram', '{"chat_id":"1"}', null,
    json_build_object('subject', 's', 'text', repeat('&', 2000))::text)::json)->>'text', 5) as telegram_end;
-- a template repeating a large value is bounded (1 MiB of filled text in all)
select octet_length(echovalue._webhook_body('custom', '{}', '["{{text}}","{{text}}","{{text}}"]',
    json_build_object('text', repeat('x', 600000))::text)) as bounded_bytes;

-- the test call: charged 1, queues one test delivery of a sample email in the webhook's format
-- and names it in x-echovalue-await; the answer comes from webhook_test_result
update echovalue.deliveries set state = 'failed' where state = 'pending';
select status, body, cost, headers->>'x-echovalue-await' ~ ('^' || :w || ':[0-9]+:msg_[0-9a-f]{32}$') as awaits
  from echovalue.webhook_test(token => :'tok', webhook_id => 'alerts');
select headers->>'x-echovalue-await' as t1 from echovalue.webhook_test(token => :'tok', webhook_id => 'alerts') \gset
select method, path, endpoint, status_code, cost from echovalue.logs where wallet_id = :w order by id desc limit 1;
select status is null as not_yet from echovalue.webhook_test_result(:'t1');
select count(*) as claimed, min(payload) as body from echovalue.delivery_claim(batch => 10);
-- claimed once only: a test is never claimed again, and its retry is its failure
select count(*) as claimed_again from echovalue.delivery_claim(batch => 10);
select echovalue.delivery_record(delivery_id => split_part(:'t1', ':', 2)::bigint, attempt => 1,
       outcome => 'retry', status_code => 503, error => 'HTTP 503 Service Unavailable', retry_seconds => 30);
select status, body, cost, balance from echovalue.webhook_test_result(:'t1');
select state, attempts from echovalue.deliveries where id = split_part(:'t1', ':', 2)::bigint;
select headers->>'x-echovalue-await' as t2 from echovalue.webhook_test(token => :'tok', webhook_id => 'alerts') \gset
select echovalue.delivery_record(delivery_id => split_part(:'t2', ':', 2)::bigint, attempt => 1,
       outcome => 'delivered', status_code => 200);
select body from echovalue.webhook_test_result(:'t2', final => true);
-- the value names its wallet (the proxy's routing hint, which the call never trusts); the
-- form before 0.11.0, without it, is still answered; another wallet's is no test
select echovalue.test_wallet(:'t2') = :w as names_wallet, echovalue.test_wallet('12:msg_x') as old_form;
select r.what, (r.o).body from (values
    ('old form', echovalue.webhook_test_result(substr(:'t2', strpos(:'t2', ':') + 1))),
    ('wrong hint', echovalue.webhook_test_result(:'t2', wallet => 1)),
    ('another wallet', echovalue.webhook_test_result('1' || substr(:'t2', strpos(:'t2', ':')))))
    as r(what, o);
-- no worker in time: the final answer ends the test (logged, never sent later)
select headers->>'x-echovalue-await' as t3 from echovalue.webhook_test(token => :'tok', webhook_id => 'alerts') \gset
select body from echovalue.webhook_test_result(:'t3', final => true);
select count(*) as claimable from echovalue.delivery_claim(batch => 10);
select status_code, error, cost from echovalue.logs where wallet_id = :w and endpoint = 'webhook-delivery'
 order by id desc limit 1;
-- a test no worker took within its window is never taken later
select headers->>'x-echovalue-await' as t4 from echovalue.webhook_test(token => :'tok', webhook_id => 'alerts') \gset
update echovalue.deliveries set created = created - interval '3 seconds' where id = split_part(:'t4', ':', 2)::bigint;
select count(*) as claimed_late from echovalue.delivery_claim(batch => 10);
select body from echovalue.webhook_test_result(:'t4', final => true);
select status, body, cost from echovalue.webhook_test(token => :'tok', webhook_id => 'nope');
select body from echovalue.webhook_test_result(split_part(:'t3', ':', 1) || ':' || split_part(:'t3', ':', 2)
                                               || ':msg_' || repeat('0', 32));
select echovalue.webhook_test_result('1:not-a-test');
rollback;
