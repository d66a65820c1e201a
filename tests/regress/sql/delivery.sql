-- Delivery queue and attachment URLs: the HMAC helper against RFC 4231, delivery_claim
-- (payload of seed 002, lease, SKIP LOCKED batch, no webhook), delivery_record (retry,
-- delivered, failed, stale attempts, logs at cost 0), attachment_get (ok, tampered, expired,
-- purged) and maintenance purging finished messages.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.webhook_allow_insecure = on;
set local echovalue.public_url = 'https://api.example.org/';
-- claims take any wallet's due rows: only this suite's may be pending here
update echovalue.deliveries set state = 'failed' where state = 'pending';

-- HMAC-SHA256, RFC 4231 test cases 1, 2 and 6 (a key longer than the block)
select encode(echovalue._hmac_sha256(decode(repeat('0b', 20), 'hex'), 'Hi There'::bytea), 'hex')
       = 'b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7' as rfc4231_1,
       encode(echovalue._hmac_sha256('Jefe'::bytea, 'what do ya want for nothing?'::bytea), 'hex')
       = '5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843' as rfc4231_2,
       encode(echovalue._hmac_sha256(decode(repeat('aa', 131), 'hex'),
                                     'Test Using Larger Than Block-Size Key - Hash Key First'::bytea), 'hex')
       = '60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54' as rfc4231_6;

select body as tok from echovalue.token_new(client_addr => inet '192.0.2.60') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select status from echovalue.webhook_set(token => :'tok',
    body => '{"url":"http://127.0.0.1:9/hook","headers":{"Authorization":"Bearer x"}}');
select (echovalue.webhook_get(token => :'tok')).body::json->>'email' as email \gset
select code from echovalue.mail_receive(recipient => :'email', message_id => 'abc@example.com',
    from_email => 'john@gmail.com', from_name => 'John Snow', subject => 'Alert: Server down',
    text_body => 'Server #3 is not responding', html_body => '<p>Server #3</p>',
    headers => '{"Subject":"Alert: Server down"}', size_bytes => 1234,
    attachment_filenames => array['report.pdf'], attachment_content_types => array['application/pdf'],
    attachment_contents => array['\x255044462d'::bytea]);
select code from echovalue.mail_receive(recipient => :'email', message_id => 'second@example.com',
    from_email => 'a@b.c', from_name => null, subject => 's', text_body => 't', html_body => null,
    headers => '{}', size_bytes => 10);
select id as d1 from echovalue.deliveries where wallet_id = :w order by id limit 1 \gset

-- claim: a batch of one takes the oldest; what the worker needs, the payload in seed order
select delivery_id = :d1 as oldest, attempt, webhook_id ~ '^msg_[0-9a-f]{32}$' as webhook_id_ok,
       url, url_error, headers, secret ~ '^whsec_' as secret_ok
  from echovalue.delivery_claim(batch => 1, lease_seconds => 60);
select state, attempts, next_attempt_at > now() + interval '59 seconds' as leased
  from echovalue.deliveries where id = :d1;
-- the leased row is not claimed again; the other one is
select count(*) as claimed, bool_and(delivery_id <> :d1) as other_one
  from echovalue.delivery_claim(batch => 10, lease_seconds => 60);
select count(*) as nothing_due from echovalue.delivery_claim(batch => 10, lease_seconds => 60);
-- the lease ran out (the worker died): claimed again, same webhook-id, next attempt number
select webhook_id as wid from echovalue.deliveries where id = :d1 \gset
update echovalue.deliveries set next_attempt_at = now() where id = :d1;
select p.attempt, p.webhook_id = :'wid' as same_id,
       json_object_keys_ordered, p.payload::json->'from'->>'email' as from_email,
       p.payload::json->'from'->>'name' as from_name, p.payload::json->'to'->>'hash' = w.hash as to_hash,
       p.payload::json->>'externalMessageId' as ext_id, p.payload::json->>'subject' as subject,
       p.payload::json->>'text' as text, p.payload::json->>'html' as html, p.payload::json->'headers'->>'Subject' as subject_header
  from echovalue.delivery_claim(batch => 10, lease_seconds => 60) p
  cross join lateral (select string_agg(k, ',') as json_object_keys_ordered
                        from json_object_keys(p.payload::json) k) k
  join echovalue.wallets w on w.id = :w;
-- the attachment entry: a signed URL on public_url, valid attachment_url_seconds
update echovalue.deliveries set next_attempt_at = now() where id = :d1;
select payload::json->'attachments'->0 as a from echovalue.delivery_claim(batch => 1, lease_seconds => 60) \gset
select :'a'::json->>'filename' as filename, :'a'::json->>'contentType' as content_type, :'a'::json->>'size' as size,
       :'a'::json->>'downloadUrl' ~ '^https://api\.example\.org/attachments/[0-9]+\?expires=[0-9]+&sig=[0-9a-f]{64}$' as url_ok,
       (:'a'::json->>'downloadUrlExpiresAt')::timestamptz - now() between interval '3590 seconds' and interval '3601 seconds' as one_hour;

-- record: a retry from a stale attempt changes nothing but is logged; the latest one does
select echovalue.delivery_record(delivery_id => :d1, attempt => 1, outcome => 'retry',
                                 status_code => 500, error => 'HTTP 500', retry_seconds => 30) as stale_retry;
select echovalue.delivery_record(delivery_id => :d1, attempt => 3, outcome => 'retry',
                                 status_code => 503, error => 'HTTP 503', retry_seconds => 30) as retry;
select state, attempts, last_status, last_error,
       next_attempt_at between now() + interval '29 seconds' and now() + interval '31 seconds' as in_30s
  from echovalue.deliveries where id = :d1;
-- a success always counts, even from an older attempt
select echovalue.delivery_record(delivery_id => :d1, attempt => 2, outcome => 'delivered', status_code => 204) as delivered;
select echovalue.delivery_record(delivery_id => :d1, attempt => 3, outcome => 'failed', status_code => 400) as after_done;
select state, last_status, last_error from echovalue.deliveries where id = :d1;
select method, path = :'wid' as path_is_webhook_id, endpoint, status_code, error, cost
  from echovalue.logs where wallet_id = :w and endpoint = 'webhook-delivery' order by id;
-- bad outcomes and arguments are refused
savepoint refused;
select echovalue.delivery_record(delivery_id => :d1, attempt => 1, outcome => 'maybe');
rollback to savepoint refused;
select echovalue.delivery_record(delivery_id => :d1, attempt => 1, outcome => 'retry');
rollback to savepoint refused;
select * from echovalue.delivery_claim(batch => 0);
rollback to savepoint refused;
-- a delivery whose wallet removed its webhook fails at claim, logged
select status from echovalue.webhook_delete(token => :'tok');
update echovalue.deliveries set next_attempt_at = now() where wallet_id = :w and state = 'pending';
select count(*) as claimed from echovalue.delivery_claim(batch => 10, lease_seconds => 60);
select state, last_error from echovalue.deliveries where wallet_id = :w order by id;

-- a whole batch of such rows does not hide a deliverable one behind it
select body as tok2 from echovalue.token_new(client_addr => inet '192.0.2.61') \gset
select status from echovalue.webhook_set(token => :'tok2', body => '{"url":"http://127.0.0.1:9/two"}');
select (echovalue.webhook_get(token => :'tok2')).body::json->>'email' as email2 \gset
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9/hook"}');
select (echovalue.mail_receive(recipient => r, message_id => null, from_email => 'a@b.c', from_name => null,
           subject => 's', text_body => 't', html_body => null, headers => '{}', size_bytes => 10)).code
  from unnest(array[:'email', :'email', :'email2']) with ordinality as u(r, n) order by n;
select status from echovalue.webhook_delete(token => :'tok');
select url from echovalue.delivery_claim(batch => 1, lease_seconds => 60);
select state, last_error, count(*) from echovalue.deliveries where wallet_id = :w group by 1, 2 order by 1, 2;

-- attachment_get: the URL from the payload works; tampering, expiry and purge do not
select substring(:'a'::json->>'downloadUrl' from '/attachments/([0-9]+)') as att,
       substring(:'a'::json->>'downloadUrl' from 'expires=([0-9]+)') as exp,
       substring(:'a'::json->>'downloadUrl' from 'sig=([0-9a-f]+)') as sig \gset
select status, content_type, filename, content, error from echovalue.attachment_get(:'att', :'exp', :'sig');
select t.what, (echovalue.attachment_get(t.id, t.exp, t.sig)).status
  from (values ('other id', (:'att'::bigint + 1)::text, :'exp', :'sig'),
               ('later expiry', :'att', (:'exp'::bigint + 1)::text, :'sig'),
               ('other signature', :'att', :'exp', repeat('0', 64)),
               ('upper-case signature', :'att', :'exp', upper(:'sig')),
               ('no signature', :'att', :'exp', null),
               ('no expiry', :'att', null, :'sig'),
               ('malformed id', 'x', :'exp', :'sig')) as t(what, id, exp, sig);
select floor(extract(epoch from now()))::bigint - 1 as past \gset
select status, error from echovalue.attachment_get(:'att', :'past', echovalue._attachment_sig(:'att', :'past'));
delete from echovalue.attachments where id = :'att'::bigint;
select status, error from echovalue.attachment_get(:'att', :'exp', :'sig');

-- the addresses a webhook's host resolved to, checked at delivery: all public, or loopback
-- while echovalue.webhook_allow_insecure is on; never private, mapped, metadata or empty
select a.addrs, echovalue.delivery_addresses_error(a.addrs) as insecure_on
  from (values (array['93.184.216.34', '2606:2800:220:1::1']::inet[]),
               (array['127.0.0.1', '::1']::inet[]),
               (array['93.184.216.34', '10.0.0.5']::inet[]),
               (array['::ffff:127.0.0.1']::inet[]),
               (array['169.254.169.254']::inet[]),
               (array[]::inet[]), (null), (array[null]::inet[])) as a(addrs);
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9/hook"}');
set local echovalue.webhook_allow_insecure = off;
select echovalue.delivery_addresses_error(array['127.0.0.1']::inet[]) as insecure_off_loopback,
       echovalue.delivery_addresses_error(array['93.184.216.34']::inet[]) as insecure_off_public,
       echovalue.delivery_addresses_error(array_fill('93.184.216.34'::inet, array[257])) as too_many;
-- the switch turned off after the webhook was set: the claim says why its URL may not be called
select code from echovalue.mail_receive(recipient => :'email', message_id => 'off@example.com',
    from_email => 'a@b.c', from_name => null, subject => 's', text_body => 't', html_body => null,
    headers => '{}', size_bytes => 10);
select c.url, c.url_error
  from echovalue.delivery_claim(batch => 100, lease_seconds => 60) c
  join echovalue.deliveries d on d.id = c.delivery_id
  join echovalue.messages m on m.id = d.message_id
 where m.external_id = 'off@example.com';
set local echovalue.webhook_allow_insecure = on;

-- maintenance: finished messages older than message_retention_hours go with their delivery
-- row; a pending one stays however old
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9/hook"}');
select code from echovalue.mail_receive(recipient => :'email', message_id => 'third@example.com',
    from_email => 'a@b.c', from_name => null, subject => 's', text_body => 't', html_body => null,
    headers => '{}', size_bytes => 10);
update echovalue.messages set received_at = now() - interval '73 hours' where wallet_id = :w;
set local echovalue.maintenance_batch = 1000;
select (echovalue.maintenance_run())->'messages' as purged_messages;
select m.external_id, d.state from echovalue.messages m join echovalue.deliveries d on d.message_id = m.id
 where m.wallet_id = :w order by m.id;
rollback;
