-- The proxy's kv_get call, one client per wallet (bench.tokens row client_id % token count).
\set n :client_id % :ntokens
select status from echovalue.kv_get(
    token => (select t.token from bench.tokens t where t.n = :n),
    grp => 'bench', key => 'k', http_method => 'GET', http_path => '/kv/bench/k');
