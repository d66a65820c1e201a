# shellcheck shell=bash
# The backup round trip (issue 15, item 11), sourced by tests/run.sh: a database with the
# extension, an operator's changes (a price, a tier's payment link, the alert relay) and a
# wallet with a key is dumped with `pg_dump -Fc` and restored with `pg_restore` into a fresh
# database. pg_restore must exit 0, and the restored database must give the same answers as
# the original: the KV value at the operator's price, the payment link, the relay, and the
# signature of an attachment download URL (the installation key came back, so URLs signed
# before the backup stay valid).

# The same questions to both databases, one line of answers.
backup__answers() {
    ev_psql "$1" -tA -v token="$2" <<'SQL'
select concat_ws(' | ',
    (select concat_ws(',', status, body, cost, balance)
       from echovalue.kv_get(token => :'token', grp => 'g', key => 'k')),
    (select concat_ws(',', status, body, cost)
       from echovalue.recharge_link(token => :'token', amount => '1')),
    (select from_address from echovalue.mail_relay),
    echovalue._attachment_sig(1, 4102444800),
    (select count(*) from echovalue.prices),
    (select count(*) from echovalue.installation_keys))
SQL
}

run_backup() {
    section "backup and restore (pg_dump, pg_restore)"
    local dump=$TMP/backup.dump token before after rc=0 passed=0 failed=0
    ev_psql postgres -c 'drop database if exists ev_bk_a' -c 'drop database if exists ev_bk_b' \
        -c 'create database ev_bk_a' -c 'create database ev_bk_b'
    ev_psql ev_bk_a -c 'create extension echovalue'
    token=$(ev_psql ev_bk_a -tA -c "select body from echovalue.token_new(client_addr => '192.0.2.9')")
    ev_psql ev_bk_a -v token="$token" <<'SQL' >/dev/null
update echovalue.prices set credits = 2 where operation = 'kv_get';
update echovalue.recharge_tiers
   set link = 'https://buy.stripe.com/test_backup', stripe_link_id = 'plink_backup'
 where amount = 1;
select echovalue.relay_register('alerts@example.com');
select echovalue.kv_set(token => :'token', grp => 'g', key => 'k', value => 'kept');
SQL
    "$EV_PG_BIN/pg_dump" -Fc -h "$EV_CLUSTER_DIR" -p "$EV_PORT" -U "$EV_PG_SUPERUSER" \
        -d ev_bk_a -f "$dump"
    # Asked after the dump, so both databases start from the same state.
    before=$(backup__answers ev_bk_a "$token")
    "$EV_PG_BIN/pg_restore" -h "$EV_CLUSTER_DIR" -p "$EV_PORT" -U "$EV_PG_SUPERUSER" \
        -d ev_bk_b "$dump" >"$TMP/pg_restore.log" 2>&1 || rc=$?
    after=$(backup__answers ev_bk_b "$token")
    echo "original: $before"
    echo "restored: $after"
    if [ "$rc" -eq 0 ]; then
        echo "pg_restore exits 0 ... ok"
        passed=$((passed + 1))
    else
        echo "pg_restore exits 0 ... FAILED (exit $rc)"
        cat "$TMP/pg_restore.log"
        failed=$((failed + 1))
    fi
    # 200 with the value at the operator's price, and the tier's link.
    if [ "$before" = "$after" ] && [[ $after == 200,kept,2,* ]] &&
        [[ $after == *"https://buy.stripe.com/test_backup"* ]] && [[ $after == *"alerts@example.com"* ]]; then
        echo "the restored database answers the same ... ok"
        passed=$((passed + 1))
    else
        echo "the restored database answers the same ... FAILED"
        failed=$((failed + 1))
    fi
    ev_psql postgres -c 'drop database ev_bk_a' -c 'drop database ev_bk_b'
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    echo "backup: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
