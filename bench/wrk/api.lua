-- One echovalue request per call, with x-token taken round-robin from a file of tokens (one per
-- line): with one token every request hits the same wallet, with many they spread.
--   wrk ... -s bench/wrk/api.lua URL -- OPERATION TOKENS_FILE
-- OPERATION: kv_get (GET /kv/bench/k), kv_set (POST /kv/bench/k, body "v"), balance (GET /token).
local tokens = {}
local next_token = 0
local method, path, body

function init(args)
    local op, file = args[1], args[2]
    for line in io.lines(file) do
        if #line > 0 then
            tokens[#tokens + 1] = line
        end
    end
    if #tokens == 0 then
        error("no tokens in " .. tostring(file))
    end
    if op == "kv_get" then
        method, path = "GET", "/kv/bench/k"
    elseif op == "kv_set" then
        method, path, body = "POST", "/kv/bench/k", "v"
    elseif op == "balance" then
        method, path = "GET", "/token"
    else
        error("unknown operation " .. tostring(op))
    end
    -- threads start at different tokens so they do not move in step
    next_token = math.random(#tokens) - 1
end

function request()
    next_token = next_token % #tokens + 1
    local headers = { ["x-token"] = tokens[next_token] }
    if body then
        headers["content-type"] = "application/x-www-form-urlencoded"
    end
    return wrk.format(method, path, headers, body)
end
