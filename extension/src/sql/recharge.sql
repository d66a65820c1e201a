-- Recharge API: the operator's payment link for a tier, tagged with the wallet hash.

-- A URL with `name=value` added to its query: `?` or `&` as the URL needs, none after a
-- trailing `?` or `&`, and before any `#fragment` (after it, Stripe would never see it).
create function echovalue._url_with_param(p_url text, p_name text, p_value text) returns text
language sql immutable strict parallel safe as $$
    select case
               when pg_catalog.strpos(base, '?') = 0 then base || '?'
               when base ~ '[?&]$' then base
               else base || '&'
           end || p_name || '=' || p_value || fragment
      from (select pg_catalog.split_part(p_url, '#', 1) as base,
                   case when pg_catalog.strpos(p_url, '#') > 0
                        then pg_catalog.substr(p_url, pg_catalog.strpos(p_url, '#')) else '' end as fragment) as u
$$;

-- GET /recharge?amount=: the tier's link + client_reference_id=<wallet hash>;
-- 400 for an amount that is not a tier, 501 when the tier has no link configured.
create function echovalue.recharge_link(
    token text,
    amount text default '1',
    http_method text default 'GET',
    http_path text default '/recharge?amount=1',
    wallet bigint default null
) returns echovalue.outcome
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_caller echovalue.caller := echovalue._wallet_resolve(recharge_link.token,
        recharge_link.http_method, recharge_link.http_path);
    v_amount text := coalesce(recharge_link.amount, '1');
    v_found boolean;
    v_link text;
    v_amounts text;
    v_hash text;
    v_paid echovalue.payment;
begin
    if v_caller.wallet_id is null then
        return echovalue._unauthorized();
    end if;
    if v_amount ~ '^[0-9]{1,9}$' then
        select true, t.link into v_found, v_link
          from echovalue.recharge_tiers t where t.amount = v_amount::int;
    end if;
    if v_found is null then
        -- (the tiers read by a statement of their own; see _webhook_answer)
        select pg_catalog.string_agg(t.amount::text, ' or ' order by t.amount) into v_amounts
          from echovalue.recharge_tiers t;
        return echovalue._fail(v_caller, 'recharge_link', 400, 'Bad Request: amount must be '
            || coalesce(v_amounts, 'a configured tier'));
    end if;
    if v_link is null then
        return echovalue._fail(v_caller, 'recharge_link', 501, 'Not Implemented');
    end if;
    v_paid := echovalue._pay(v_caller, 'recharge_link');
    if v_paid.balance is null then
        return v_paid.refusal;
    end if;
    select w.hash into v_hash from echovalue.wallets w where w.id = v_caller.wallet_id;
    return echovalue._finish(v_caller, v_paid, 200,
        echovalue._url_with_param(v_link, 'client_reference_id', v_hash));
end;
$$;
