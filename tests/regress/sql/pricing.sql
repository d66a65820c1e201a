-- Charging: prices from the table, errors charged, 402 when the wallet cannot pay,
-- request_refuse, last_used.
\set VERBOSITY terse
begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.30') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset

-- the default price list (seed 002)
select operation, credits from echovalue.prices order by operation;

-- prices come from the table
update echovalue.prices set credits = 5 where operation = 'kv_get';
update echovalue.prices set credits = 2 where operation = 'wallet_get';
select status, cost, balance from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'v');
select status, body, cost, balance from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k');
select status, cost, balance from echovalue.wallet_get(token => :'tok');
-- errors on a known wallet cost what the operation costs
select status, body, cost, balance from echovalue.kv_get(token => :'tok', grp => 'g', key => 'nope');
select status, body, cost, balance from echovalue.kv_get(token => :'tok', grp => 'reserved-g', key => 'k');

-- the wallet cannot pay: 402, nothing done, logged with cost 0, balance never negative
update echovalue.wallets set balance = 4 where id = :w;
select status, body, content_type, cost, balance, headers
  from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k');
select status, cost, balance from echovalue.wallet_get(token => :'tok');
select status, cost, balance from echovalue.wallet_get(token => :'tok');
select status, body, cost, balance from echovalue.wallet_get(token => :'tok');
select status, body, cost, balance from echovalue.kv_set(token => :'tok', grp => 'g', key => 'k', value => 'changed');
select status, body, cost, balance from echovalue.kv_delete(token => :'tok', grp => 'g', key => 'k');
-- an invalid request of a broke wallet is 402 too (it could not pay for the error)
select status, body, cost, balance from echovalue.kv_set(token => :'tok', grp => '', key => 'k', value => 'v');
select value from echovalue.kv where wallet_id = :w;
select balance from echovalue.wallets where id = :w;
select status_code, error, cost, balance from echovalue.logs where wallet_id = :w order by id desc limit 5;
-- the free recharge link still answers at 0 credits; a logs entry is not free
select status, body, cost, balance from echovalue.recharge_link(token => :'tok');
select status, body, cost, balance from echovalue.logs_get(token => :'tok', n => '1');

-- the balance cannot be driven negative, not even directly
update echovalue.wallets set balance = -1 where id = :w;
rollback;

begin;
set local echovalue.token_rate_seconds = 0;
select body as tok from echovalue.token_new(client_addr => inet '192.0.2.31') \gset
select wallet_id as w from echovalue.tokens where hash = sha256(convert_to(:'tok', 'UTF8')) \gset

-- request_refuse: a request the proxy refused (405, body not UTF-8) is charged and logged as
-- the operation the extension finds for its route and method
select status, body, content_type, cost, balance, headers
  from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 405,
                                error => 'Method Not Allowed', http_method => 'PUT', http_path => '/kv/g/k');
select status, body, cost, balance
  from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 400,
                                error => 'Bad Request: body must be UTF-8', http_method => 'POST', http_path => '/kv/g/k');
select status, body, cost, balance
  from echovalue.request_refuse(token => :'tok', route => '/token', status => 405,
                                error => 'Method Not Allowed', http_method => 'PATCH', http_path => '/token');
select method, path, endpoint, status_code, error, cost, balance
  from echovalue.logs where wallet_id = :w order by id desc limit 3;
-- the operation of every route the proxy has, by method (NULL: never charged)
select r.route, m.method, echovalue._refusal_operation(r.route, m.method) as operation
  from (values ('/token'), ('/token/logs'), ('/token/keys'), ('/token/keys/{id}'), ('/token/settings'), ('/recharge'),
               ('/kv/{group}/{key}'), ('/webhook'), ('/attachments/{id}'), ('/'), ('/logs'),
               ('/{group}/{key}'), ('/healthz'), ('/metrics'), ('stripe-webhook'), ('unmatched'))
       as r(route),
       (values ('GET'), ('POST'), ('DELETE'), ('PUT')) as m(method)
 order by r.route, m.method;
-- a route that is never charged: the refusal as it is, nothing charged or logged
select status, body, cost, balance
  from echovalue.request_refuse(token => :'tok', route => '/healthz', status => 405,
                                error => 'Method Not Allowed', http_method => 'POST', http_path => '/healthz');
select count(*) as logged from echovalue.logs where wallet_id = :w and path = '/healthz';
update echovalue.wallets set balance = 0 where id = :w;
select status, body, cost, balance
  from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 405,
                                error => 'Method Not Allowed', http_method => 'PUT', http_path => '/kv/g/k');
select status, body, cost, balance
  from echovalue.request_refuse(token => 'bad', route => '/kv/{group}/{key}', status => 405,
                                error => 'Method Not Allowed', http_method => 'PUT', http_path => '/kv/g/k');
savepoint s;
select status from echovalue.request_refuse(token => :'tok', route => '/kv/{group}/{key}', status => 200,
                                            error => 'OK', http_method => 'GET', http_path => '/x');
rollback to s;

-- every request of a known wallet marks it used (keeps it from the inactive purge)
update echovalue.wallets set last_used = now() - interval '100 days', balance = 10 where id = :w;
select status from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k');
select last_used = now() as used_now from echovalue.wallets where id = :w;
update echovalue.wallets set last_used = now() - interval '100 days', balance = 0 where id = :w;
select status from echovalue.kv_get(token => :'tok', grp => 'g', key => 'k');
select last_used = now() as used_even_when_402 from echovalue.wallets where id = :w;
select t.last_used = now() as token_used_now from echovalue.tokens t where t.wallet_id = :w;
rollback;
