-- recharge_link: tiers, links, 400 and 501.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.40') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset
select hash as wallet_hash from echovalue.wallets where id = :w \gset

-- default tiers, no links configured
select amount, link, stripe_link_id, credits from echovalue.recharge_tiers order by amount;
select status, body, content_type, cost, balance from echovalue.recharge_link(token => :'tok');
select status, body, cost, balance from echovalue.recharge_link(token => :'tok', amount => '3');

-- with a link: the link plus the wallet hash (never the token), free, logged on endpoint token
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_1', stripe_link_id = 'plink_1' where amount = 1;
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_3?locale=it' where amount = 3;
select status, body = 'https://buy.stripe.com/test_1?client_reference_id=' || :'wallet_hash' as link_ok,
       strpos(body, :'tok') = 0 as no_token, content_type, cost, balance
  from echovalue.recharge_link(token => :'tok', amount => '1', http_path => '/recharge?amount=1');
select status, body = 'https://buy.stripe.com/test_3?locale=it&client_reference_id=' || :'wallet_hash' as link_ok
  from echovalue.recharge_link(token => :'tok', amount => '3', http_path => '/recharge?amount=3');
-- the parameter goes into the query, before a fragment, with one separator
select link, echovalue._url_with_param(link, 'client_reference_id', 'h') as tagged
  from (values ('https://buy.stripe.com/a'), ('https://buy.stripe.com/a?'),
               ('https://buy.stripe.com/a?locale=it'), ('https://buy.stripe.com/a?locale=it&'),
               ('https://buy.stripe.com/a#top'), ('https://buy.stripe.com/a?x=1#top'),
               ('https://buy.stripe.com/a?x=1#top?y=2'), ('https://buy.stripe.com/a#')) as l (link);
update echovalue.recharge_tiers set link = 'https://buy.stripe.com/test_3?locale=it#pay' where amount = 3;
select status, body = 'https://buy.stripe.com/test_3?locale=it&client_reference_id=' || :'wallet_hash' || '#pay' as link_ok
  from echovalue.recharge_link(token => :'tok', amount => '3', http_path => '/recharge?amount=3');
-- NULL amount means 1
select status, body like 'https://buy.stripe.com/test_1?%' as tier_1
  from echovalue.recharge_link(token => :'tok', amount => null);
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w order by id;

-- rejected amounts
select status, body, cost, balance from echovalue.recharge_link(token => :'tok', amount => '2');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '0');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '-1');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '1.0');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => 'abc');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '');
select status, body, cost from echovalue.recharge_link(token => :'tok', amount => '99999999999999999999');
select status_code, error from echovalue.logs where wallet_id = :w order by id desc limit 1;
-- bad token
select status, body, cost, balance from echovalue.recharge_link(token => 'x', amount => '1');
rollback;
