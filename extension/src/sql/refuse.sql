-- Requests the proxy refused itself after resolving the token (405 on a known path, a body
-- that is not UTF-8): charged and logged like any other error of that operation.

-- Charges `operation`'s price and logs `status`/`error`; 402 when the wallet cannot pay.
create function echovalue.request_refuse(
    token text,
    operation text,
    status int,
    error text,
    http_method text,
    http_path text
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(token, http_method, http_path);
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if status is null or status not between 400 and 599 or error is null then
        raise exception 'echovalue: request_refuse needs an error status (400-599) and text'
            using errcode = 'invalid_parameter_value';
    end if;
    return echovalue._fail(v_caller, operation, status, error);
end;
$$;
