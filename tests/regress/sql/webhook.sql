-- webhook_set, webhook_get, webhook_delete: happy path, mailbox and secret, then every
-- refused URL, bad JSON and bad headers (each charged and logged), 404, 402.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.30') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
-- every refusal below is charged: give the wallet room for all of them
update echovalue.wallets set balance = 1000 where id = :w;

-- without a webhook: only email and hash; the mailbox is made on first need
select count(*) as mailboxes_before from echovalue.mailboxes where wallet_id = :w;
select status, content_type, cost, balance, body::jsonb ? 'webhook' as has_webhook,
       body::json->>'hash' = encode(sha256(convert_to(:'tok', 'UTF8')), 'hex') as hash_ok,
       body::json->>'email' ~ ('^' || echovalue._wallet_key(:w) || '[0-9a-f]{24}@localhost$') as email_ok,
       (select string_agg(k, ',' order by k) from json_object_keys(body::json) k) as fields
  from echovalue.webhook_get(token => :'tok');
select mailbox ~ ('^' || echovalue._wallet_key(:w) || '[0-9a-f]{24}$') as opaque_mailbox, strpos(:'tok', mailbox) = 0 as not_from_token,
       secret ~ '^whsec_[A-Za-z0-9+/]{43}=$' as secret_format,
       length(decode(substr(secret, 7), 'base64')) as secret_bytes
  from echovalue.mailboxes where wallet_id = :w;
select mailbox as mb, secret as sec from echovalue.mailboxes where wallet_id = :w \gset

-- the seed's example, then read it back: values redacted, secret shown, mailbox unchanged
select status, body, content_type, cost, balance
  from echovalue.webhook_set(token => :'tok',
       body => '{"url":"https://yourdomain.com/webhook","headers":{"Authorization":"Bearer secret"}}');
select status, cost, balance, body::json->>'webhook' as webhook, body::json->'headers' as headers,
       body::json->>'email' = :'mb' || '@localhost' as same_email,
       body::json->>'secret' = :'sec' as same_secret,
       (select string_agg(k, ',') from json_object_keys(body::json) k) as fields
  from echovalue.webhook_get(token => :'tok');
select url, headers from echovalue.webhooks where wallet_id = :w;
-- upsert: replaced, and headers are optional (null or absent mean none)
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"https://hooks.example.com:8443/in?x=1#f"}');
select url, headers from echovalue.webhooks where wallet_id = :w;
select status, body from echovalue.webhook_set(token => :'tok',
       body => '{"url":"https://8.8.8.8/h","headers":null}');
select status, body from echovalue.webhook_set(token => :'tok',
       body => '{"url":"https://[2606:4700::1111]/h","headers":{"X-A":"1","x-b":"two\tparts","Authorization":"Bearer t"}}');
select url, headers from echovalue.webhooks where wallet_id = :w;
select body::json->'headers' as redacted from echovalue.webhook_get(token => :'tok');
-- the mail domain is a setting
set local echovalue.mail_domain = 'Hook.Example.org';
select body::json->>'email' = :'mb' || '@hook.example.org' as email_uses_domain
  from echovalue.webhook_get(token => :'tok');
reset echovalue.mail_domain;
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w order by id;

-- refused URLs: 400 with the rule, 1 credit each, logged; the stored webhook is unchanged
select balance as before from echovalue.wallets where id = :w \gset
create temp table refused (url text);
insert into refused values
    ('http://example.com/'), ('ftp://example.com/'), ('example.com/hook'), ('https:example.com'),
    ('//example.com/'), (''), ('https://'), ('https:///path'), ('https://user:pw@example.com/'),
    ('https://example.com@10.0.0.1/'), ('https://example.com\@127.0.0.1/'), ('https://exa mple.com/'),
    ('https://example.com/a b'), ('https://bücher.de/'), ('https://exa_mple.com/'),
    ('https://-bad.com/'), ('https://example.com:0/'), ('https://example.com:65536/'),
    ('https://example.com:99999999999/'), ('https://example.com:x/'), ('https://[::1/'),
    ('https://localhost/'), ('https://LOCALHOST:8443/'), ('https://app.localhost/'),
    ('https://localhost./'), ('https://intranet/'), ('https://printer.local/'),
    ('https://db.internal/'), ('https://nas.home.arpa/'), ('https://x.test/'),
    ('https://127.0.0.1/'), ('https://127.255.255.254/'), ('https://0.0.0.0/'), ('https://0.1.2.3/'),
    ('https://10.1.2.3/'), ('https://172.16.0.1/'), ('https://172.31.255.255/'), ('https://192.168.1.1/'),
    ('https://169.254.169.254/latest/meta-data'), ('https://100.64.0.1/'), ('https://100.127.255.254/'),
    ('https://192.0.0.8/'), ('https://192.0.2.1/'), ('https://198.18.0.1/'), ('https://198.19.255.1/'),
    ('https://198.51.100.7/'), ('https://203.0.113.9/'), ('https://224.0.0.1/'), ('https://239.255.255.250/'),
    ('https://240.0.0.1/'), ('https://255.255.255.255/'), ('https://192.88.99.1/'),
    ('https://127.1/'), ('https://0x7f.0.0.1/'), ('https://0x7f000001/'), ('https://2130706433/'),
    ('https://017700000001/'), ('https://127.000.000.001/'), ('https://1.2.3.4.5/'),
    ('https://[::]/'), ('https://[::1]/'), ('https://[::1]:8443/'), ('https://[::ffff:127.0.0.1]/'),
    ('https://[::ffff:8.8.8.8]/'), ('https://[::ffff:7f00:1]/'), ('https://[::127.0.0.1]/'),
    ('https://[fe80::1]/'), ('https://[fe80::1%25eth0]/'), ('https://[fc00::1]/'), ('https://[fd12:3456::1]/'),
    ('https://[fec0::1]/'), ('https://[ff02::1]/'), ('https://[2001:db8::1]/'), ('https://[64:ff9b::7f00:1]/'),
    ('https://[2002:7f00:1::1]/'), ('https://[2001::1]/'), ('https://[100::1]/'), ('https://[3fff::1]/'),
    ('https://[::1/128]/'), ('https://[1::1]/'), ('https://[not-an-ip]/'),
    ('https://example.com/' || repeat('a', 2048));
select left(r.url, 50) as url, o.status, o.body, o.cost
  from refused r, lateral echovalue.webhook_set(token => :'tok', body => json_build_object('url', r.url)::text) o
 order by r.ctid;
select (select count(*) from refused) as refused_urls,
       :before - balance as credits_charged from echovalue.wallets where id = :w;
select url from echovalue.webhooks where wallet_id = :w;

-- bad bodies and bad headers
select status, body, cost from echovalue.webhook_set(token => :'tok', body => 'not json');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => null);
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '"https://example.com/"');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '[{"url":"https://example.com/"}]');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/"');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/\u0000"}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => repeat('[', 100000) || repeat(']', 100000));
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":null}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":42}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":["https://example.com/"]}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","header":{}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":"x"}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":["a"]}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-N":1}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-N":null}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-O":{"a":"b"}}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"":"v"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"Bad Name":"v"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X:Y":"v"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"Ünï":"v"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => json_build_object('url', 'https://example.com/', 'headers', json_build_object(repeat('x', 65), 'v'))::text);
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-A":"line\r\nInjected: yes"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-A":"café"}}');
select status, body, cost from echovalue.webhook_set(token => :'tok', body => json_build_object('url', 'https://example.com/', 'headers', json_build_object('X-A', repeat('v', 1025)))::text);
select status, body, cost from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/","headers":{"X-A":"1","x-a":"2"}}');
select h as reserved_header, (echovalue.webhook_set(token => :'tok',
       body => json_build_object('url', 'https://example.com/', 'headers', json_build_object(h, 'v'))::text)).body
  from unnest(array['Host', 'content-length', 'Content-Type', 'Transfer-Encoding', 'Connection', 'Keep-Alive',
                    'TE', 'Trailer', 'Upgrade', 'Proxy-Authorization', 'Expect', 'Content-Encoding',
                    'webhook-id', 'Webhook-Signature', 'WEBHOOK-TIMESTAMP']) h;
select status, body, cost from echovalue.webhook_set(token => :'tok',
       body => (select json_build_object('url', 'https://example.com/', 'headers', json_object_agg('X-H' || i, 'v'))::text
                  from generate_series(1, 21) i));
select status, body from echovalue.webhook_set(token => :'tok',
       body => (select json_build_object('url', 'https://example.com/', 'headers', json_object_agg('X-H' || i, 'v'))::text
                  from generate_series(1, 20) i));
select count(*) as stored_headers from echovalue.webhooks h, jsonb_object_keys(h.headers) where h.wallet_id = :w;

-- the insecure setting (tests only) allows http and loopback, and nothing else
set local echovalue.webhook_allow_insecure = on;
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9000/hook"}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://localhost:9000/hook"}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://[::1]:9000/hook"}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://10.0.0.1/hook"}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://169.254.169.254/"}');
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"ftp://127.0.0.1/"}');
reset echovalue.webhook_allow_insecure;
select status, body from echovalue.webhook_set(token => :'tok', body => '{"url":"http://127.0.0.1:9000/hook"}');

-- address_classify, the one classification delivery reuses
select a, echovalue.address_classify(a::inet)
  from unnest(array['8.8.8.8', '1.1.1.1', '127.0.0.1', '10.0.0.1', '100.64.1.1', '169.254.1.1', '224.1.1.1',
                    '2606:4700::1111', '::1', '::', '::ffff:8.8.8.8', 'fe80::1', 'fd00::1', 'ff02::1',
                    '2001:db8::1', '64:ff9b::808:808', '1::1', '10.0.0.0/8']) a;
select echovalue.address_classify(null) as null_in_null_out;

-- delete: OK, then 404 Webhook Not Found (charged); the mailbox stays
select status, body, cost from echovalue.webhook_delete(token => :'tok');
select status, body, cost from echovalue.webhook_delete(token => :'tok');
select count(*) as webhooks, (select count(*) from echovalue.mailboxes where wallet_id = :w) as mailboxes
  from echovalue.webhooks where wallet_id = :w;
select (select string_agg(k, ',') from json_object_keys(body::json) k) as fields_after_delete
  from echovalue.webhook_get(token => :'tok');

-- unknown token: 401, nothing charged; an empty wallet: 402, nothing changes, logged with cost 0
select status, body, cost, balance from echovalue.webhook_get(token => 'ev_tok_sk_live_nope');
select status, body, cost, balance from echovalue.webhook_set(token => null, body => '{}');
update echovalue.wallets set balance = 0 where id = :w;
select status, body, cost, balance from echovalue.webhook_set(token => :'tok', body => '{"url":"https://example.com/"}');
select status, body, cost, balance from echovalue.webhook_set(token => :'tok', body => 'bad');
select status, body, cost, balance from echovalue.webhook_get(token => :'tok');
select status, body, cost, balance from echovalue.webhook_delete(token => :'tok');
select count(*) as webhooks_after_402 from echovalue.webhooks where wallet_id = :w;
select method, path, status_code, error, cost from echovalue.logs where wallet_id = :w order by id desc limit 4;

-- another wallet gets its own mailbox and secret
select body as other from echovalue.token_new(client_addr => inet '192.0.2.31') \gset
select (echovalue.webhook_get(token => :'other')).body::json->>'email' <> :'mb' || '@localhost' as distinct_mailbox;
select count(distinct secret) as distinct_secrets from echovalue.mailboxes;
rollback;
