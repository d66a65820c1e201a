-- Bench row 5: one request to Redis behind webdis per call, the counterpart of api.lua's kv_get
-- and kv_set of a small value (no token: webdis checks nothing per request).
--   wrk ... -s bench/wrk/webdis.lua URL -- OPERATION
-- OPERATION: get (GET /GET/bench_k.txt), set (PUT /SET/bench_k.txt, body "v").
-- The value goes in the body, as in echovalue's POST /kv/bench/k: webdis's PUT form takes the
-- command's last argument from the body, so any bytes can be stored and the URL holds only the
-- key (GET /SET/bench_k/v would put the value in the path, escaped, and write on a GET). The
-- .txt suffix makes webdis answer the bare value ("v", or "+OK" for SET) as text/plain, as
-- echovalue does, instead of wrapping it in JSON ({"GET":"v"}).
local method, path, body

function init(args)
    local op = args[1]
    if op == "get" then
        method, path = "GET", "/GET/bench_k.txt"
    elseif op == "set" then
        method, path, body = "PUT", "/SET/bench_k.txt", "v"
    else
        error("unknown operation " .. tostring(op))
    end
end

-- Built on every call, as api.lua does, so that wrk spends alike per request in both rows.
function request()
    return wrk.format(method, path, nil, body)
end
