-- Claiming deliveries (Mail2Webhook, SPEC §7 and §12): the lease that takes due rows of the
-- queue and `delivery_claim`, which returns what each POST needs. The queue, the payloads and
-- delivery_record are in delivery.sql.

-- How long after it was queued a test may still be claimed: its caller waits for the claim
-- and one call (the proxy's ECHOVALUE_WEBHOOK_TEST_WAIT_SECS covers this and the mailhook's
-- delivery timeout), so a test taken later could be sent after its caller got its answer.
create function echovalue._test_claim_window() returns interval
language sql immutable as $$
    select interval '2 seconds'
$$;

-- Leases up to p_batch due deliveries for p_lease seconds and counts the attempt: fresh tests
-- first (a caller waits for each), then the others, oldest due first, each class found on its
-- own index. A test gets one attempt, and none once its window has passed. p_email: the alert
-- emails instead, which the mailhook sends through its relay.
-- The due rows are read first, without a lock (up to 4 × p_batch of them, so that rows another
-- worker holds still leave p_batch to take); then each wallet's share is locked with SKIP
-- LOCKED, checked again and leased in one statement that names the wallet, so on Citus it runs
-- on that wallet's shard (Citus refuses FOR UPDATE across shards).
create function echovalue._delivery_lease(p_batch int, p_lease int, p_email boolean default false)
returns table (wallet_id bigint, id bigint, message_id bigint, attempts int, webhook_id text,
               webhook text, kind text, body text)
language plpgsql volatile as $$
declare
    v_now timestamptz := pg_catalog.now();
    v_until timestamptz := v_now + pg_catalog.make_interval(secs => p_lease);
    v_tests_from timestamptz := v_now - echovalue._test_claim_window();
    v_class text;
    v_wallets bigint[];
    v_ids bigint[];
    v_wallet bigint;
    v_wallet_ids bigint[];
    v_left int := p_batch;
    v_n int;
begin
    foreach v_class in array case when p_email then array['alert_email'] else array['test', 'other'] end
    loop
        if v_class = 'alert_email' then
            select pg_catalog.array_agg(d.wallet_id order by d.next_attempt_at, d.id),
                   pg_catalog.array_agg(d.id order by d.next_attempt_at, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.next_attempt_at from echovalue.deliveries d
                     where d.state = 'pending' and d.kind = 'alert_email' and d.next_attempt_at <= v_now
                     order by d.next_attempt_at, d.id
                     limit 4 * v_left) d;
        elsif v_class = 'test' then
            select pg_catalog.array_agg(d.wallet_id order by d.created, d.id),
                   pg_catalog.array_agg(d.id order by d.created, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.created from echovalue.deliveries d
                     where d.state = 'pending' and d.kind = 'test' and d.attempts = 0
                       and d.created > v_tests_from
                     order by d.created, d.id
                     limit 4 * v_left) d;
        else
            select pg_catalog.array_agg(d.wallet_id order by d.next_attempt_at, d.id),
                   pg_catalog.array_agg(d.id order by d.next_attempt_at, d.id)
              into v_wallets, v_ids
              from (select d.wallet_id, d.id, d.next_attempt_at from echovalue.deliveries d
                     where d.state = 'pending' and d.kind not in ('test', 'alert_email')
                       and d.next_attempt_at <= v_now
                     order by d.next_attempt_at, d.id
                     limit 4 * v_left) d;
        end if;
        -- wallet by wallet, in the order of each wallet's first due row
        for v_wallet, v_wallet_ids in
            select u.w, pg_catalog.array_agg(u.i order by u.n)
              from rows from (pg_catalog.unnest(v_wallets), pg_catalog.unnest(v_ids)) with ordinality u(w, i, n)
             group by u.w
             order by pg_catalog.min(u.n)
        loop
            return query
                update echovalue.deliveries d
                   set attempts = d.attempts + 1, next_attempt_at = v_until
                 where d.wallet_id = v_wallet and d.id = any (array(
                     select x.id from echovalue.deliveries x
                      where x.wallet_id = v_wallet and x.id = any (v_wallet_ids) and x.state = 'pending'
                        and case v_class
                                when 'test' then x.kind = 'test' and x.attempts = 0 and x.created > v_tests_from
                                when 'alert_email' then x.kind = 'alert_email' and x.next_attempt_at <= v_now
                                else x.kind not in ('test', 'alert_email') and x.next_attempt_at <= v_now
                            end
                      order by pg_catalog.array_position(v_wallet_ids, x.id)
                      limit v_left
                      for update skip locked))
                returning d.wallet_id, d.id, d.message_id, d.attempts, d.webhook_id, d.webhook, d.kind, d.body;
            get diagnostics v_n = row_count;
            v_left := v_left - v_n;
            exit when v_left = 0;
        end loop;
        exit when v_left = 0;
    end loop;
end;
$$;

-- Claims up to `batch` due deliveries for `lease_seconds` (the attempt must be recorded
-- before then, or another dispatcher will claim it again) and returns what each POST needs:
-- the delivery id and attempt number (for delivery_record), the stable webhook-id, the URL,
-- why that URL may not be called now (the configuration rules again, _webhook_url_error: the
-- switch may have been turned off since; NULL when it may), the user's headers, the wallet's
-- signing secret and the body in the webhook's format (_webhook_body). A claimed delivery
-- whose webhook is gone fails for good instead (logged); when a whole batch was such
-- rows it claims the next one, so an empty result means nothing this caller may send is due.
-- `wallet_id` is the delivery's wallet, for delivery_record's routing hint `wallet`.
create function echovalue.delivery_claim(batch int default 50, lease_seconds int default 60)
returns table (delivery_id bigint, attempt int, webhook_id text, url text, url_error text,
               headers jsonb, secret text, payload text, wallet_id bigint)
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_row record;
    v_claimed int;
    v_returned int;
    v_format text;
    v_options jsonb;
    v_template text;
    v_gone text;
begin
    if delivery_claim.batch is null or delivery_claim.batch not between 1 and 10000
       or delivery_claim.lease_seconds is null or delivery_claim.lease_seconds not between 1 and 86400 then
        raise exception 'echovalue: delivery_claim needs batch 1..10000 and lease_seconds 1..86400'
            using errcode = 'invalid_parameter_value';
    end if;
    loop
        v_claimed := 0;
        v_returned := 0;
        for v_row in select * from echovalue._delivery_lease(delivery_claim.batch, delivery_claim.lease_seconds)
        loop
            v_claimed := v_claimed + 1;
            if v_row.kind = 'alert' then
                -- an alert's body is made when it is queued; it goes to the alert webhook
                select s.url, s.headers, mb.secret into url, headers, secret
                  from echovalue.wallet_settings s
                  join echovalue.mailboxes mb on mb.wallet_id = s.wallet_id
                 where s.wallet_id = v_row.wallet_id and s.url is not null;
            else
                select h.url, h.headers, mb.secret, h.format, h.options, h.template::text
                  into url, headers, secret, v_format, v_options, v_template
                  from echovalue.webhooks h
                  join echovalue.mailboxes mb on mb.wallet_id = h.wallet_id
                 where h.wallet_id = v_row.wallet_id and h.name = v_row.webhook;
            end if;
            if not found then
                v_gone := case when v_row.kind = 'alert' then 'no alert webhook configured'
                               else 'no webhook configured' end;
                update echovalue.deliveries d
                   set state = 'failed', last_status = null, last_error = v_gone
                 where d.wallet_id = v_row.wallet_id and d.id = v_row.id;
                perform echovalue._delivery_log(v_row.wallet_id, v_row.webhook_id, 0, v_gone);
                if v_row.kind = 'test' then
                    perform pg_catalog.pg_notify('echovalue_webhook_test',
                        echovalue._test_await(v_row.wallet_id, v_row.id, v_row.webhook_id));
                end if;
                continue;
            end if;
            delivery_id := v_row.id;
            attempt := v_row.attempts;
            wallet_id := v_row.wallet_id;
            url_error := pg_catalog.regexp_replace(echovalue._webhook_url_error(url),
                                                   '^Bad Request: ', '');
            webhook_id := v_row.webhook_id;
            payload := case when v_row.kind = 'mail'
                then echovalue._webhook_body(v_format, v_options, v_template,
                                             echovalue._delivery_payload(v_row.wallet_id, v_row.message_id))
                else v_row.body end;
            v_returned := v_returned + 1;
            return next;
        end loop;
        exit when v_claimed = 0 or v_returned > 0;
    end loop;
end;
$$;
