-- mail_rcpt_check and mail_receive, the mailhook's two calls: recipient routing (mailbox or
-- token, domain, webhook, credits), then storing one message with attachments, its charge,
-- log entry, delivery row and notification; refusals store nothing.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.40') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select (echovalue.webhook_get(token => :'tok')).body::json->>'email' as email \gset
select mailbox as mb from echovalue.mailboxes where wallet_id = :w \gset

-- routing: without a webhook, unknown mailbox, other domains, malformed
select * from echovalue.mail_rcpt_check(recipient => :'email');
select * from echovalue.mail_rcpt_check(recipient => :'tok' || '@localhost');
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/hook"}');
select r.what, (echovalue.mail_rcpt_check(recipient => r.addr)).*
  from (values ('mailbox', :'email'), ('mailbox, upper case', upper(:'email')),
               ('mailbox, domain with trailing dot', :'mb' || '@localhost.'),
               ('token', :'tok' || '@localhost'), ('token, upper case', upper(:'tok') || '@LocalHost'),
               ('unknown mailbox', 'ffffffffffffffffffffffff@localhost'),
               ('unknown token', 'ev_tok_sk_live_' || repeat('0', 38) || '@localhost'),
               ('other domain', :'mb' || '@example.com'), ('subdomain', :'mb' || '@sub.localhost'),
               ('no domain', :'mb'), ('empty domain', :'mb' || '@'), ('empty local part', '@localhost'),
               ('empty', ''), ('too long', repeat('a', 300) || '@localhost')) as r(what, addr);
select * from echovalue.mail_rcpt_check(recipient => null);
-- the domain is a setting, compared ignoring case
set local echovalue.mail_domain = 'Hook.Example.org';
select * from echovalue.mail_rcpt_check(recipient => :'mb' || '@hook.EXAMPLE.org');
select * from echovalue.mail_rcpt_check(recipient => :'mb' || '@localhost');
reset echovalue.mail_domain;
-- a revoked token no longer routes
update echovalue.tokens set revoked = now() where wallet_id = :w;
select * from echovalue.mail_rcpt_check(recipient => :'tok' || '@localhost');
select * from echovalue.mail_rcpt_check(recipient => :'email');
update echovalue.tokens set revoked = null where wallet_id = :w;
-- RCPT checks charge and log nothing
select balance, (select count(*) from echovalue.logs where wallet_id = :w and endpoint = 'email') as email_logs
  from echovalue.wallets where id = :w;

-- addresses name their wallet (SPEC section 18): the mailbox id is the wallet key and 24 hex
-- digits, a named webhook's too; `wallet` is a hint the call never trusts
select :'mb' ~ ('^' || echovalue._wallet_key(:w) || '[0-9a-f]{24}$') as keyed,
       echovalue.recipient_wallet(:'email') = :w as named,
       echovalue.recipient_wallet(upper(:'tok') || '@LocalHost') = :w as token_named;
select status from echovalue.webhook_put(token => :'tok', webhook_id => 'named', body => '{"url":"https://example.com/named"}');
select mailbox as named_mb from echovalue.webhooks where wallet_id = :w and name = 'named' \gset
select :'named_mb' ~ ('^' || echovalue._wallet_key(:w) || '[0-9a-f]{24}$') as keyed;
select r.what, (echovalue.mail_rcpt_check(recipient => r.addr, wallet => r.hint)).*
  from (values ('named webhook', :'named_mb' || '@localhost', null::bigint),
               ('wrong hint', :'email', 12345),
               ('another wallet''s key', '00000001' || substr(:'mb', 9) || '@localhost', 1),
               ('unknown random part', echovalue._wallet_key(:w) || repeat('0', 24) || '@localhost', :w))
       as r(what, addr, hint);
-- a mailbox made before 0.11.0 (24 hex digits) routes through mailbox_legacy, and only so
update echovalue.mailboxes set mailbox = '0123456789abcdef01234567' where wallet_id = :w;
update echovalue.webhooks set mailbox = 'fedcba9876543210fedcba98' where wallet_id = :w and name = 'named';
select echovalue.recipient_wallet('0123456789abcdef01234567@localhost') as no_key;
select * from echovalue.mail_rcpt_check(recipient => '0123456789abcdef01234567@localhost');
insert into echovalue.mailbox_legacy values ('0123456789abcdef01234567', :w), ('fedcba9876543210fedcba98', :w);
select * from echovalue.mail_rcpt_check(recipient => '0123456789ABCDEF01234567@localhost');
select * from echovalue.mail_rcpt_check(recipient => 'fedcba9876543210fedcba98@localhost');
update echovalue.mailboxes set mailbox = :'mb' where wallet_id = :w;
select status from echovalue.webhook_remove(token => :'tok', webhook_id => 'named');
select * from echovalue.mail_rcpt_check(recipient => 'fedcba9876543210fedcba98@localhost');

-- receive: stored with attachments, charged 1, logged, queued, notified
select balance as before from echovalue.wallets where id = :w \gset
select code, message ~ '^2\.0\.0 queued as [0-9]+$' as queued from echovalue.mail_receive(
    recipient => :'email', message_id => 'abc@example.com', from_email => 'john@gmail.com',
    from_name => 'John Snow', subject => 'Alert: Server down', text_body => 'Server #3 is not responding',
    html_body => '<p>Server #3 is not responding</p>', headers => '{"Subject":"Alert: Server down","Received":["a","b"]}',
    size_bytes => 1234,
    attachment_filenames => array['report.pdf', null],
    attachment_content_types => array['application/pdf', 'image/png'],
    attachment_contents => array['\x255044462d'::bytea, '\x89504e47'::bytea]);
select :before - balance as charged from echovalue.wallets where id = :w;
select m.external_id, m.from_email, m.from_name, m.subject, m.text_body, m.html_body, m.headers, m.size_bytes,
       m.received_at = now() as received_now
  from echovalue.messages m where m.wallet_id = :w;
select a.position, a.filename, a.content_type, a.size, a.content
  from echovalue.attachments a join echovalue.messages m on m.wallet_id = a.wallet_id and m.id = a.message_id
 where a.wallet_id = :w order by a.position;
select d.state, d.attempts, d.next_attempt_at <= now() as due_now,
       d.message_id = (select id from echovalue.messages where wallet_id = :w) as for_message
  from echovalue.deliveries d where d.wallet_id = :w;
select method, path = :'email' as path_is_mailbox, endpoint, status_code, error, cost, balance = :before - 1 as balance_ok
  from echovalue.logs where wallet_id = :w order by id desc limit 1;
-- addressed by token: stored the same, and the log never shows the token
select code, message ~ '^2\.0\.0 queued as [0-9]+$' as queued from echovalue.mail_receive(
    recipient => upper(:'tok') || '@localhost', message_id => null, from_email => null, from_name => null,
    subject => null, text_body => null, html_body => null, headers => null, size_bytes => 0);
select count(*) as messages, (select count(*) from echovalue.deliveries where wallet_id = :w) as deliveries
  from echovalue.messages where wallet_id = :w;
select path = :'email' as path_is_mailbox, strpos(path, :'tok') = 0 as no_token
  from echovalue.logs where wallet_id = :w order by id desc limit 1;
select headers from echovalue.messages where wallet_id = :w and external_id is null;

-- refusals at DATA store nothing: unknown, no webhook, no credits (logged as 402, cost 0)
select count(*) as messages_before from echovalue.messages \gset
select * from echovalue.mail_receive(recipient => 'nobody@localhost', message_id => 'x', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1);
update echovalue.wallets set balance = 0 where id = :w;
select * from echovalue.mail_rcpt_check(recipient => :'email');
select * from echovalue.mail_receive(recipient => :'email', message_id => 'x', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1,
    attachment_filenames => array['a'], attachment_content_types => array['text/plain'], attachment_contents => array['\x00'::bytea]);
select balance from echovalue.wallets where id = :w;
select method, endpoint, status_code, error, cost, balance from echovalue.logs where wallet_id = :w order by id desc limit 1;
update echovalue.wallets set balance = 10 where id = :w;
select status from echovalue.webhook_delete(token => :'tok');
select * from echovalue.mail_receive(recipient => :'email', message_id => 'x', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1);
select count(*) - :messages_before as messages_added, (select count(*) from echovalue.attachments where wallet_id = :w) as attachments
  from echovalue.messages;

-- mismatched attachment arrays are a caller bug: an error, nothing stored
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/hook"}');
select * from echovalue.mail_receive(recipient => :'email', message_id => 'x', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1,
    attachment_filenames => array['a', 'b'], attachment_content_types => array['text/plain'],
    attachment_contents => array['\x00'::bytea]);
rollback;

-- maintenance purges attachments after echovalue.attachment_retention_hours; messages stay
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.41') \gset
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/hook"}');
select (echovalue.webhook_get(token => :'tok')).body::json->>'email' as email \gset
select code from echovalue.mail_receive(recipient => :'email', message_id => 'old', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1,
    attachment_filenames => array['old.txt'], attachment_content_types => array['text/plain'],
    attachment_contents => array['\x6f6c64'::bytea]);
select code from echovalue.mail_receive(recipient => :'email', message_id => 'new', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1,
    attachment_filenames => array['new.txt'], attachment_content_types => array['text/plain'],
    attachment_contents => array['\x6e6577'::bytea]);
update echovalue.attachments set created = now() - interval '48 hours 1 second' where filename = 'old.txt';
update echovalue.attachments set created = now() - interval '47 hours' where filename = 'new.txt';
select echovalue.maintenance_run()->'attachments' as attachments_purged;
select filename from echovalue.attachments where filename in ('old.txt', 'new.txt');
select count(*) as messages_kept from echovalue.messages where external_id in ('old', 'new');
rollback;

-- a wallet's stored mail is bounded by echovalue.mail_quota_mb: over it 452 at RCPT and at
-- the end of DATA, nothing stored, charged or logged; 0 turns the quota off
begin;
set local echovalue.token_rate_seconds = 0;
set local echovalue.mail_quota_mb = 1;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.42') \gset
select status from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/hook"}');
select (echovalue.webhook_get(token => :'tok')).body::json->>'email' as email \gset
select (echovalue.wallet_get(token => :'tok')).balance as before \gset
select code, message from echovalue.mail_receive(recipient => :'email', message_id => 'q1', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 1000000);
-- 48,576 bytes left: a message of 48,577 is refused, whole, and costs nothing
select code, message from echovalue.mail_receive(recipient => :'email', message_id => 'q2', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 48577);
select (echovalue.wallet_get(token => :'tok')).balance = :before - 2 as charged_once_and_the_get;
select code, message from echovalue.mail_receive(recipient => :'email', message_id => 'q3', from_email => null,
    from_name => null, subject => null, text_body => 't', html_body => null, headers => '{}', size_bytes => 48576);
-- exactly full: RCPT is refused too
select code, message from echovalue.mail_rcpt_check(recipient => :'email');
select count(*) as stored from echovalue.messages m join echovalue.tokens t on t.wallet_id = m.wallet_id
 where t.hash = sha256(convert_to(:'tok', 'UTF8'));
set local echovalue.mail_quota_mb = 0;
select code from echovalue.mail_rcpt_check(recipient => :'email');
rollback;

-- the mailhook's role: the worker functions only, no table, no API function
set role echovalue_mailhook;
select count(*) from echovalue.messages;
select * from echovalue.webhook_get(token => 'x');
select * from echovalue.mail_rcpt_check(recipient => 'nobody@localhost');
select echovalue.address_classify('10.0.0.1');
reset role;
select p.proname from pg_proc p
 where p.pronamespace = 'echovalue'::regnamespace and has_function_privilege('echovalue_worker', p.oid, 'execute')
 order by 1;
