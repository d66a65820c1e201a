-- The proxy's kv_set call, one client per wallet (bench.tokens row client_id % token count).
\set n :client_id % :ntokens
select status from echovalue.kv_set(
    token => (select t.token from bench.tokens t where t.n = :n),
    grp => 'bench', key => 'k', value => 'v', ttl => null,
    http_method => 'POST', http_path => '/kv/bench/k');
