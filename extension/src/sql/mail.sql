-- Receiving mail (Mail2Webhook, SPEC §7): the mailhook's two calls. `mail_rcpt_check` answers
-- RCPT TO; `mail_receive` stores one parsed message for one recipient, with its attachments,
-- charges it, logs it and queues its delivery, all in the caller's one transaction, then
-- NOTIFYs `echovalue_mail` so a dispatcher wakes. The delivery queue is the truth; the
-- notification is only a wake-up.

-- An SMTP reply: code and text (enhanced status code first), sent to the client as given.
create type echovalue.smtp_reply as (
    code    int,
    message text
);

-- One received message, as the webhook payload (seed 002) will carry it.
create table echovalue.messages (
    id          bigint generated always as identity,
    wallet_id   bigint not null references echovalue.wallets (id) on delete cascade,
    received_at timestamptz not null default now(),
    external_id text,                         -- the Message-ID header, without <>
    from_email  text,
    from_name   text,
    subject     text,
    text_body   text,
    html_body   text,
    headers     jsonb not null default '{}'::jsonb,
    size_bytes  int not null check (size_bytes >= 0),
    primary key (wallet_id, id)
);
create unique index messages_id_idx on echovalue.messages (id);

-- Attachments of a message; maintenance purges them after echovalue.attachment_retention_hours.
create table echovalue.attachments (
    id           bigint generated always as identity,
    wallet_id    bigint not null,
    message_id   bigint not null,
    position     int not null,
    filename     text,
    content_type text not null,
    size         int not null check (size >= 0),
    content      bytea not null,
    created      timestamptz not null default now(),
    primary key (wallet_id, id),
    foreign key (wallet_id, message_id) references echovalue.messages (wallet_id, id) on delete cascade
);
create unique index attachments_id_idx on echovalue.attachments (id);
create index attachments_message_idx on echovalue.attachments (wallet_id, message_id);
create index attachments_created_idx on echovalue.attachments (created);

-- The delivery queue, claimed by dispatchers when due: one row per message (kind `mail`), to
-- the webhook it was sent to; one per run of a scheduled webhook (kind `scheduled`, its body
-- made when the run was planned, one per occurrence); and one per test call (kind `test`: one
-- attempt, never retried).
create table echovalue.deliveries (
    id              bigint generated always as identity,
    wallet_id       bigint not null,
    message_id      bigint,
    webhook         text default 'default',           -- the name of the wallet's webhook (NULL: an alert)
    kind            text not null default 'mail',
    body            text,                             -- what a run, a test or an alert sends
    scheduled_for   timestamptz,                      -- the occurrence a run is for
    state           text not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    attempts        int not null default 0,
    next_attempt_at timestamptz not null default now(),
    created         timestamptz not null default now(),
    last_status     int,
    last_error      text,
    -- the Standard Webhooks `webhook-id`: stable across retries, random so it reveals no volume
    webhook_id      text not null default ('msg_' || pg_catalog.replace(pg_catalog.gen_random_uuid()::text, '-', '')),
    primary key (wallet_id, id),
    foreign key (wallet_id, message_id) references echovalue.messages (wallet_id, id) on delete cascade,
    foreign key (wallet_id) references echovalue.wallets (id) on delete cascade,
    -- an alert (settings.sql) goes to the wallet's alert webhook (`alert`) or, by email,
    -- through the operator's relay (`alert_email`, body {"to","subject","text"})
    constraint deliveries_kind_check check ((
        (kind = 'mail' and message_id is not null and body is null and scheduled_for is null)
        or (kind = 'scheduled' and message_id is null and body is not null and scheduled_for is not null)
        or (kind = 'test' and message_id is null and body is not null and scheduled_for is null)
        or (kind in ('alert', 'alert_email') and message_id is null and body is not null
            and scheduled_for is null))
        and (webhook is null) = (kind in ('alert', 'alert_email')))
);
create unique index deliveries_id_idx on echovalue.deliveries (id);
-- A claimed row stays `pending` with next_attempt_at moved past its lease, so this one index
-- finds both due rows and rows whose worker died mid-delivery.
create index deliveries_due_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind not in ('test', 'alert_email');
-- Alert emails are sent by their own worker (alert_email_claim).
create index deliveries_email_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind = 'alert_email';
-- Tests are claimed first, and only while fresh (delivery_claim): their own index.
create index deliveries_test_idx on echovalue.deliveries (created)
    where state = 'pending' and kind = 'test';
-- One delivery per message; also what the message purge's NOT EXISTS and ON DELETE CASCADE use.
create unique index deliveries_message_idx on echovalue.deliveries (wallet_id, message_id);
create index messages_received_idx on echovalue.messages (received_at);
-- Runs and tests have no message: maintenance finds old ones here.
create index deliveries_unmessaged_idx on echovalue.deliveries (created) where kind <> 'mail';
-- Exactly one run per (webhook, occurrence), whatever crashes and however many workers plan.
create unique index deliveries_run_idx on echovalue.deliveries (wallet_id, webhook, scheduled_for)
    where kind = 'scheduled';

select pg_catalog.pg_extension_config_dump('echovalue.messages', '');
select pg_catalog.pg_extension_config_dump('echovalue.messages_id_seq', '');
select pg_catalog.pg_extension_config_dump('echovalue.attachments', '');
select pg_catalog.pg_extension_config_dump('echovalue.attachments_id_seq', '');
select pg_catalog.pg_extension_config_dump('echovalue.deliveries', '');
select pg_catalog.pg_extension_config_dump('echovalue.deliveries_id_seq', '');

-- The wallet and webhook an envelope recipient names, or the SMTP refusal. A recipient is
-- <mailbox>@<mail domain> (the wallet's mailbox, for webhook `default`, or a named webhook's
-- own) or <token>@<mail domain> (for `default`), compared ignoring case (mailbox ids and
-- tokens are lowercase); the webhook must exist and be in mailbox mode.
create function echovalue._mail_route(
    p_recipient text, out o_caller echovalue.caller, out o_webhook echovalue.webhooks,
    out o_code int, out o_message text
)
language plpgsql volatile as $$
declare
    v_addr text := pg_catalog.lower(p_recipient);
    v_local text := pg_catalog.substring(v_addr, '^(.+)@[^@]+$');
    v_domain text := pg_catalog.rtrim(pg_catalog.substring(v_addr, '@([^@]+)$'), '.');
    v_wallet bigint;
    v_key bigint;
    v_name text := 'default';
begin
    if v_local is null or pg_catalog.char_length(v_addr) > 254 then
        o_code := 550;
        o_message := '5.1.3 bad recipient address';
        return;
    end if;
    if v_domain <> pg_catalog.lower(echovalue._setting_text('mail_domain')) then
        o_code := 550;
        o_message := '5.7.1 relaying denied: not a domain of this service';
        return;
    end if;
    -- mail to a token's address is paid by that token, within its limits; to a mailbox
    -- address by the wallet, with no token's limits
    if echovalue.token_format_ok(v_local) then
        o_caller := echovalue._wallet_resolve(v_local, 'SMTP', null);
        v_wallet := o_caller.wallet_id;
    else
        -- the wallet a mailbox names in its key, or, for one made before 0.11.0, the map's;
        -- then the address among that wallet's mailbox and webhooks (on Citus, its shard)
        v_key := coalesce(echovalue.recipient_wallet(v_addr),
                          (select l.wallet_id from echovalue.mailbox_legacy l
                            where l.mailbox = v_local));
        select m.wallet_id into v_wallet from echovalue.mailboxes m
         where m.wallet_id = v_key and m.mailbox = v_local;
        if v_wallet is null then
            select h.wallet_id, h.name into v_wallet, v_name from echovalue.webhooks h
             where h.wallet_id = v_key and h.mailbox = v_local;
        end if;
        o_caller.wallet_id := v_wallet;
        o_caller.method := 'SMTP';
    end if;
    if v_wallet is null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 no such mailbox';
        return;
    end if;
    select * into o_webhook from echovalue.webhooks h where h.wallet_id = v_wallet and h.name = v_name;
    if not found then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 mailbox has no webhook configured';
    elsif o_webhook.cron is not null then
        o_caller := null;
        o_code := 550;
        o_message := '5.1.1 the webhook of this mailbox is scheduled and takes no mail';
    end if;
end;
$$;

-- Why a wallet cannot store `p_bytes` more of mail (452, try later), or NULL: the raw size of
-- its stored messages (until maintenance purges them) plus these bytes beyond
-- echovalue.mail_quota_mb. The sum reads the wallet's messages by its primary key.
create function echovalue._mail_quota_refusal(p_wallet bigint, p_bytes bigint) returns echovalue.smtp_reply
language plpgsql stable as $$
begin
    return (
    select row(452, '4.2.2 mailbox full; try again later')::echovalue.smtp_reply
     where echovalue._setting('mail_quota_mb') > 0
       and (select coalesce(sum(m.size_bytes), 0) from echovalue.messages m where m.wallet_id = p_wallet)
           + p_bytes > echovalue._setting('mail_quota_mb')::bigint * 1048576);
end;
$$;

-- RCPT TO: 250 when the recipient's wallet has a webhook and can pay for one email; 550 for
-- an unknown mailbox, another domain or no webhook; 452 (try later) when it cannot pay or its
-- stored mail is at its quota. Nothing is charged or logged here. `wallet` is a routing hint
-- only, as in the API functions: the mailhook passes echovalue.recipient_wallet(recipient),
-- by which Citus runs the call on the node of its wallet; the address alone decides.
create function echovalue.mail_rcpt_check(recipient text, wallet bigint default null)
returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_price bigint;
begin
    select * into v_route from echovalue._mail_route(mail_rcpt_check.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    -- (the price first: on Citus the query of the wallet's row runs whole on its shard)
    v_price := (echovalue._price('email')).credits;
    if not exists (select 1 from echovalue.wallets w
                    where w.id = (v_route.o_caller).wallet_id and w.balance >= v_price) then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;
    -- at RCPT, one more byte must fit
    return coalesce(echovalue._mail_quota_refusal((v_route.o_caller).wallet_id, 1),
                    row(250, '2.1.5 recipient ok')::echovalue.smtp_reply);
end;
$$;

-- After DATA, for one recipient: charges `email`, stores the message and its attachments
-- (none for a webhook with includeAttachments false), queues its delivery to that webhook, logs it (`endpoint` email, method SMTP, path = the mailbox address,
-- never a token) and NOTIFYs echovalue_mail with the delivery id. 250 only when all of it is
-- done; the routing refusals of mail_rcpt_check otherwise, 452 (nothing stored, logged
-- as a 402) when the wallet ran out of credits since RCPT, and 452 (nothing stored, charged
-- or logged) when the message would take the wallet's stored mail past its quota.
create function echovalue.mail_receive(
    recipient text,
    message_id text,
    from_email text,
    from_name text,
    subject text,
    text_body text,
    html_body text,
    headers jsonb,
    size_bytes int,
    attachment_filenames text[] default '{}',
    attachment_content_types text[] default '{}',
    attachment_contents bytea[] default '{}',
    wallet bigint default null                -- a routing hint, as in mail_rcpt_check
) returns echovalue.smtp_reply
language plpgsql volatile security definer
set search_path = echovalue, pg_catalog, pg_temp as $$
declare
    v_route record;
    v_caller echovalue.caller;
    v_paid echovalue.payment;
    v_message bigint;
    v_delivery bigint;
    v_full echovalue.smtp_reply;
    v_n int := coalesce(pg_catalog.cardinality(mail_receive.attachment_contents), 0);
begin
    if coalesce(pg_catalog.cardinality(mail_receive.attachment_filenames), 0) <> v_n
       or coalesce(pg_catalog.cardinality(mail_receive.attachment_content_types), 0) <> v_n
       or pg_catalog.array_position(mail_receive.attachment_contents, null) is not null then
        raise exception 'echovalue: mail_receive needs one filename, content type and content per attachment'
            using errcode = 'invalid_parameter_value';
    end if;
    select * into v_route from echovalue._mail_route(mail_receive.recipient);
    if v_route.o_code is not null then
        return row(v_route.o_code, v_route.o_message)::echovalue.smtp_reply;
    end if;
    v_caller := v_route.o_caller;
    v_full := echovalue._mail_quota_refusal(v_caller.wallet_id, greatest(mail_receive.size_bytes, 0));
    if v_full is not null then
        return v_full;
    end if;
    -- logged under the webhook's address, never the token
    v_caller.path := echovalue._webhook_email(v_route.o_webhook);
    v_paid := echovalue._pay(v_caller, 'email');
    if v_paid.balance is null then
        return row(452, '4.2.2 mailbox owner is out of credits; try again later')::echovalue.smtp_reply;
    end if;

    insert into echovalue.messages as m
        (wallet_id, external_id, from_email, from_name, subject, text_body, html_body, headers, size_bytes)
    values
        (v_caller.wallet_id, mail_receive.message_id, mail_receive.from_email, mail_receive.from_name,
         mail_receive.subject, mail_receive.text_body, mail_receive.html_body,
         coalesce(mail_receive.headers, '{}'::jsonb), mail_receive.size_bytes)
    returning m.id into v_message;
    insert into echovalue.attachments
        (wallet_id, message_id, position, filename, content_type, size, content)
    select v_caller.wallet_id, v_message, a.pos, a.filename,
           coalesce(a.content_type, 'application/octet-stream'), pg_catalog.octet_length(a.content), a.content
      from unnest(mail_receive.attachment_filenames, mail_receive.attachment_content_types,
                  mail_receive.attachment_contents) with ordinality as a(filename, content_type, content, pos)
     where (v_route.o_webhook).include_attachments;
    insert into echovalue.deliveries as d (wallet_id, message_id, webhook)
    values (v_caller.wallet_id, v_message, (v_route.o_webhook).name)
    returning d.id into v_delivery;
    perform echovalue._finish(v_caller, v_paid, 200, null);
    perform pg_catalog.pg_notify('echovalue_mail', v_delivery::text);
    return row(250, '2.0.0 queued as ' || v_message)::echovalue.smtp_reply;
end;
$$;
