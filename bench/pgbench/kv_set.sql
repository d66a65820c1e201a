-- The proxy's kv_set call, one client per wallet (bench.tokens row client_id % token count).
-- The token is looked up once per client (run with -D have_token=0) and then bound as a
-- parameter on every call, as the proxy binds it.
\if :have_token = 0
\set n :client_id % :ntokens
select t.token as token, 1 as have_token from bench.tokens t where t.n = :n \gset
\endif
select status from echovalue.kv_set(
    token => :token,
    grp => 'bench', key => 'k', value => 'v', ttl => null,
    http_method => 'POST', http_path => '/kv/bench/k');
