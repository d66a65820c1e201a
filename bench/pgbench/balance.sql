-- The proxy's wallet_get call, one client per wallet (bench.tokens row client_id % token count).
\set n :client_id % :ntokens
select status from echovalue.wallet_get(
    token => (select t.token from bench.tokens t where t.n = :n),
    http_method => 'GET', http_path => '/token');
