-- Delivering mail (Mail2Webhook, SPEC §7): the dispatcher's calls and the attachment
-- download. The queue is echovalue.deliveries: `delivery_claim` (delivery_claim.sql) leases
-- due rows (a claimed row stays `pending` with next_attempt_at moved past the lease, so a
-- worker that dies mid-POST leaves it to be claimed again: at least once, never lost),
-- `delivery_record` stores what one attempt did and logs it. Attachment URLs are signed here
-- with a per-installation key.

-- Per-installation secrets, made once at install. `attachment_url` signs download URLs.
create table echovalue.installation_keys (
    name    text primary key,
    key     bytea not null check (pg_catalog.octet_length(key) between 16 and 64),
    created timestamptz not null default now()
);
insert into echovalue.installation_keys (name, key)
values ('attachment_url', echovalue._random_bytes(32));
select pg_catalog.pg_extension_config_dump('echovalue.installation_keys', '');

-- The signature of a download URL: hex HMAC over "<attachment id>.<expiry unix seconds>".
create function echovalue._attachment_sig(p_attachment bigint, p_expires bigint) returns text
language plpgsql stable as $$
begin
    return (
    select pg_catalog.encode(echovalue._hmac_sha256(k.key,
               pg_catalog.convert_to(p_attachment::text || '.' || p_expires::text, 'UTF8')), 'hex')
      from echovalue.installation_keys k
     where k.name = 'attachment_url');
end;
$$;

-- The attachments of a message as the payload's JSON array, each with a download URL on the
-- proxy (echovalue.public_url) valid echovalue.attachment_url_seconds from now.
create function echovalue._attachments_json(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
declare
    v_expires timestamptz := pg_catalog.date_trunc('second', pg_catalog.now())
        + pg_catalog.make_interval(secs => echovalue._setting('attachment_url_seconds'));
    v_epoch bigint := pg_catalog.date_part('epoch', v_expires)::bigint;
    v_base text := pg_catalog.rtrim(echovalue._setting_text('public_url'), '/');
    v_ids bigint[];
    v_names text[];
    v_types text[];
    v_sizes int[];
begin
    -- The rows are read first, then formatted by a statement of their own: on Citus a query
    -- on one wallet's rows runs whole on its shard, where _attachment_sig could not read the
    -- installation key (a query from a shard may not be distributed again).
    select pg_catalog.array_agg(a.id order by a.position), pg_catalog.array_agg(a.filename order by a.position),
           pg_catalog.array_agg(a.content_type order by a.position), pg_catalog.array_agg(a.size order by a.position)
      into v_ids, v_names, v_types, v_sizes
      from echovalue.attachments a
     where a.wallet_id = p_wallet and a.message_id = p_message;
    return '[' || coalesce((
        select pg_catalog.string_agg(pg_catalog.format(
                   '{"filename":%s,"contentType":%s,"size":%s,"downloadUrl":%s,"downloadUrlExpiresAt":%s}',
                   echovalue._json_str(a.filename), echovalue._json_str(a.content_type), a.size,
                   echovalue._json_str(pg_catalog.format('%s/attachments/%s?expires=%s&sig=%s', v_base, a.id,
                                                         v_epoch, echovalue._attachment_sig(a.id, v_epoch))),
                   echovalue._json_str(echovalue._ts(v_expires))), ',' order by a.n)
          from rows from (pg_catalog.unnest(v_ids), pg_catalog.unnest(v_names), pg_catalog.unnest(v_types),
                          pg_catalog.unnest(v_sizes)) with ordinality a(id, filename, content_type, size, n)), '') || ']';
end;
$$;

-- The section 7 payload (seed 002) from its fields: compact JSON, keys in the documented
-- order; p_headers and p_attachments are JSON text. A message's delivery and a test's sample
-- email are both built here.
create function echovalue._mail_payload(
    p_external_id text, p_received_at timestamptz, p_from_email text, p_from_name text,
    p_hash text, p_subject text, p_text text, p_html text, p_headers text, p_attachments text
) returns text
language sql stable as $$
    select pg_catalog.format(
               '{"externalMessageId":%s,"receivedAt":%s,"from":{"email":%s,"name":%s},"to":{"hash":%s},'
               '"subject":%s,"text":%s,"html":%s,"headers":%s,"attachments":%s}',
               echovalue._json_str(p_external_id), echovalue._json_str(echovalue._ts(p_received_at)),
               echovalue._json_str(p_from_email), echovalue._json_str(p_from_name),
               echovalue._json_str(p_hash), echovalue._json_str(p_subject),
               echovalue._json_str(p_text), echovalue._json_str(p_html), p_headers, p_attachments)
$$;

-- The webhook body of a message (seed 002).
create function echovalue._delivery_payload(p_wallet bigint, p_message bigint) returns text
language plpgsql stable as $$
declare
    v_message echovalue.messages;
    v_hash text;
begin
    -- (read first, formatted after: see _attachments_json)
    select m.* into v_message from echovalue.messages m
     where m.wallet_id = p_wallet and m.id = p_message;
    if not found then
        return null;
    end if;
    select w.hash into v_hash from echovalue.wallets w where w.id = p_wallet;
    return echovalue._mail_payload(v_message.external_id, v_message.received_at, v_message.from_email,
                                   v_message.from_name, v_hash, v_message.subject, v_message.text_body,
                                   v_message.html_body, v_message.headers::text,
                                   echovalue._attachments_json(p_wallet, p_message));
end;
$$;

-- One delivery attempt's log entry: free (the `email` charge paid for delivery), the current
-- balance, path = the delivery's webhook-id so the user can match it with what arrived
-- (`webhook-delivery`, POST), or, for an alert email (p_kind alert_email), with its
-- Message-ID (`email`, SMTP; the status is the relay's reply code).
create function echovalue._delivery_log(
    p_wallet bigint, p_webhook_id text, p_status int, p_error text, p_kind text default 'mail'
) returns void
language plpgsql volatile as $$
declare
    v_balance bigint;
begin
    -- (the balance read by a statement of its own: on Citus a query of the wallet's row runs
    -- whole on its shard, where the entry could not be written)
    select w.balance into v_balance from echovalue.wallets w where w.id = p_wallet;
    if found then
        perform echovalue._log(p_wallet,
                              case when p_kind = 'alert_email' then 'email' else 'webhook-delivery' end,
                              case when p_kind = 'alert_email' then 'SMTP' else 'POST' end,
                              p_webhook_id, p_status, p_error, 0, v_balance);
    end if;
end;
$$;

-- Why a delivery may not connect to the addresses its URL's host resolved to, or NULL: every
-- one must pass _address_class_allowed, the rule a URL's address literal meets at
-- configuration (public, or loopback while echovalue.webhook_allow_insecure is on). The mailhook's resolver asks this for every lookup and connects only
-- to the addresses it checked, so a name cannot be made to point inside after configuration.
-- At most 256 addresses (a DNS answer holds far fewer).
create function echovalue.delivery_addresses_error(addrs inet[]) returns text
language plpgsql stable security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_class text;
begin
    if coalesce(pg_catalog.cardinality(addrs), 0) = 0
       or pg_catalog.array_position(addrs, null) is not null then
        return 'the host has no address';
    end if;
    if pg_catalog.cardinality(addrs) > 256 then
        return 'the host has more than 256 addresses';
    end if;
    select c.class into v_class
      from pg_catalog.unnest(addrs) with ordinality as a(addr, n),
           echovalue.address_classify(a.addr) as c(class)
     where not echovalue._address_class_allowed(c.class)
     order by a.n
     limit 1;
    if v_class is not null then
        return pg_catalog.format('the host resolves to a non-public address (%s)', v_class);
    end if;
    return null;
end;
$$;

-- Records one attempt of a claimed delivery and logs it (`endpoint` webhook-delivery,
-- status_code = the HTTP status, 0 when there was no response, error = why it failed).
-- `outcome`: 'delivered', 'retry' (again in retry_seconds; for a test, failed) or 'failed' (for
-- good). A test's end NOTIFYs echovalue_webhook_test with its await value (_test_await).
-- A success always counts; a retry or failure from an attempt that is no longer the latest
-- (its lease ran out and another dispatcher claimed the row) is only logged. Returns whether
-- the row changed. `wallet` is a routing hint only (the mailhook passes the claim's `wallet_id`:
-- on Citus the call then runs on the delivery's node); a delivery is looked for by its id
-- alone when the hint is missing or names another wallet.
create function echovalue.delivery_record(
    delivery_id bigint,
    attempt int,
    outcome text,
    status_code int default null,
    error text default null,
    retry_seconds int default null,
    wallet bigint default null
) returns boolean
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_wallet bigint;
    v_webhook_id text;
    v_kind text;
    v_error text := pg_catalog.left(delivery_record.error, 500);
    v_changed boolean := false;
    -- (a variable, not now() in the CASE: Citus refuses a non-immutable function there)
    v_retry_at timestamptz := pg_catalog.now()
        + pg_catalog.make_interval(secs => coalesce(delivery_record.retry_seconds, 0));
begin
    if delivery_record.outcome is null or delivery_record.outcome not in ('delivered', 'retry', 'failed')
       or (delivery_record.outcome = 'retry' and coalesce(delivery_record.retry_seconds, -1) < 0) then
        raise exception 'echovalue: delivery_record needs outcome delivered, failed, or retry with retry_seconds >= 0'
            using errcode = 'invalid_parameter_value';
    end if;
    -- The delivery's wallet first (with the hint, one shard's; else, on Citus, a read of every
    -- shard's id index), then every statement names it, so it runs on that wallet's shard.
    select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
      from echovalue.deliveries d
     where d.wallet_id = delivery_record.wallet and d.id = delivery_record.delivery_id;
    if not found then
        select d.wallet_id, d.webhook_id, d.kind into v_wallet, v_webhook_id, v_kind
          from echovalue.deliveries d where d.id = delivery_record.delivery_id;
    end if;
    if not found then
        return false;   -- purged with its wallet or message
    end if;
    -- a test is never retried: its one attempt's retry is its failure
    update echovalue.deliveries d
       set state = case when delivery_record.outcome <> 'retry' then delivery_record.outcome
                        when d.kind = 'test' then 'failed' else 'pending' end,
           next_attempt_at = case when delivery_record.outcome = 'retry' and d.kind <> 'test'
               then v_retry_at else d.next_attempt_at end,
           last_status = delivery_record.status_code,
           last_error = v_error
     where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
       and d.state = 'pending'
       and (delivery_record.outcome = 'delivered' or d.attempts = delivery_record.attempt);
    v_changed := found;
    if not v_changed then
        null;   -- recorded already (or the lease ran out and another attempt took it)
    elsif v_kind = 'test' then
        perform pg_catalog.pg_notify('echovalue_webhook_test',
            echovalue._test_await(v_wallet, delivery_record.delivery_id, v_webhook_id));
    elsif v_kind = 'scheduled' then
        -- the webhook shows how its latest run went
        update echovalue.webhooks h
           set last_status = case when delivery_record.outcome = 'delivered' then 'success' else 'failure' end,
               last_error = case when delivery_record.outcome = 'delivered' then null
                                 else coalesce(v_error, 'delivery failed') end
          from echovalue.deliveries d
         where d.wallet_id = v_wallet and d.id = delivery_record.delivery_id
           and h.wallet_id = v_wallet and h.name = d.webhook
           and h.last_run_at <= d.created;
    end if;
    perform echovalue._delivery_log(v_wallet, v_webhook_id, coalesce(delivery_record.status_code, 0),
                                    case when delivery_record.outcome = 'delivered' then null
                                         else coalesce(v_error, 'delivery failed') end, v_kind);
    return v_changed;
end;
$$;

-- A downloaded attachment: HTTP status, content type, filename, content; `error` is the
-- plain-text body of a refusal.
create type echovalue.attachment_download as (
    status       int,
    content_type text,
    filename     text,
    content      bytea,
    error        text
);

-- GET /attachments/{id}?expires=…&sig=…: the attachment when the signature matches and the
-- expiry has not passed (403 otherwise, checked before any lookup so a bad URL learns
-- nothing), 404 when it is gone (purged). Free and unlogged: the URL is the credential.
create function echovalue.attachment_get(attachment_id text, expires text, sig text)
returns echovalue.attachment_download
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_id bigint;
    v_expires bigint;
    v_row echovalue.attachments;
begin
    if attachment_get.attachment_id !~ '^[1-9][0-9]{0,17}$' then
        return row(404, null, null, null, 'Not Found')::echovalue.attachment_download;
    end if;
    if coalesce(attachment_get.expires, '') !~ '^[1-9][0-9]{0,11}$'
       or coalesce(attachment_get.sig, '') !~ '^[0-9a-f]{64}$' then
        return row(403, null, null, null, 'Forbidden')::echovalue.attachment_download;
    end if;
    v_id := attachment_get.attachment_id::bigint;
    v_expires := attachment_get.expires::bigint;
    if echovalue._attachment_sig(v_id, v_expires) is distinct from attachment_get.sig then
        return row(403, null, null, null, 'Forbidden')::echovalue.attachment_download;
    end if;
    if v_expires < pg_catalog.date_part('epoch', pg_catalog.now()) then
        return row(403, null, null, null, 'Forbidden: link expired')::echovalue.attachment_download;
    end if;
    select * into v_row from echovalue.attachments a where a.id = v_id;
    if not found then
        return row(404, null, null, null, 'Not Found')::echovalue.attachment_download;
    end if;
    return row(200, v_row.content_type, v_row.filename, v_row.content, null)::echovalue.attachment_download;
end;
$$;
