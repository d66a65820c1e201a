-- bench/citus.sh's floor: the proxy's kv_get call with its routing hint (proxy/src/api.rs).
select status, body, content_type, cost, balance, headers from echovalue.kv_get(
    token => :token, grp => 'bench', key => 'k', http_method => 'GET', http_path => '/kv/bench/k',
    wallet => echovalue.token_wallet(:token));
