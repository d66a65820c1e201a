-- Requests the proxy refused itself after seeing a well-formed token (405 on a known path, a
-- body, path segment or query value that is not text Postgres can hold): charged and logged
-- like any other error of the operation the request was, which is decided here.

-- The price operation of a request on `route` (a route pattern of the proxy, e.g.
-- '/kv/{group}/{key}') with `method`: the operation that method is on that path (one entry for
-- a logs request), else the path's GET; NULL for a route whose requests are never charged (attachments, health, metrics,
-- the Stripe webhook).
create function echovalue._refusal_operation(p_route text, p_method text) returns text
language sql immutable as $$
    select case
        when p_route in ('/kv/{group}/{key}', '/{group}/{key}') then
            case p_method when 'POST' then 'kv_set' when 'DELETE' then 'kv_delete' else 'kv_get' end
        when p_route = '/kv/{group}' then 'kv_list'
        when p_route = '/kv' then 'kv_groups'
        when p_route = '/webhook' then
            case p_method when 'POST' then 'webhook_set' when 'DELETE' then 'webhook_delete'
                          else 'webhook_get' end
        when p_route = '/webhook/{webhookId}' then
            case p_method when 'PUT' then 'webhook_put' when 'PATCH' then 'webhook_patch'
                          when 'DELETE' then 'webhook_remove' else 'webhook_show' end
        when p_route = '/webhook/{webhookId}/test' then 'webhook_test'
        when p_route = '/token/keys' then
            case p_method when 'POST' then 'token_key_create' else 'token_key_list' end
        when p_route = '/token/keys/{id}' then 'token_key_revoke'
        when p_route = '/token/settings' then
            case p_method when 'PUT' then 'settings_put' else 'settings_get' end
        when p_route = '/recharge' then 'recharge_link'
        when p_route in ('/token', '/') and p_method = 'POST' then 'token_new'
        when p_route in ('/token/logs', '/logs') and p_method = 'GET' then 'logs_entry'
        when p_route in ('/token', '/token/logs', '/', '/logs') then 'wallet_get'
    end
$$;

-- Charges the request's operation and logs `status`/`error`; 402 when the wallet cannot pay.
-- On a route that is never charged, the refusal as it is, uncharged (cost and balance NULL).
create function echovalue.request_refuse(
    token text,
    route text,
    status int,
    error text,
    http_method text,
    http_path text,
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token, http_method, http_path);
    v_operation text := echovalue._refusal_operation(route, http_method);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if status is null or status not between 400 and 599 or error is null then
        raise exception 'echovalue: request_refuse needs an error status (400-599) and text'
            using errcode = 'invalid_parameter_value';
    end if;
    if v_operation is null then
        return echovalue._outcome(status, error, null, null);
    end if;
    return echovalue._fail(v_caller, v_operation, status, error);
end;
$$;
