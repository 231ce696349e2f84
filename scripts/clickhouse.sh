#!/usr/bin/env bash
# A private ClickHouse server for tests and benchmarks: its own data directory, loopback only,
# ports chosen free (or given), stopped by pid. Installs Debian's clickhouse-server when missing.
#
#   scripts/clickhouse.sh start DIR [HTTP_PORT TCP_PORT]   # prints the HTTP URL once /ping answers
#   scripts/clickhouse.sh stop DIR
#   scripts/clickhouse.sh kill DIR                         # SIGKILL: an outage mid-insert
#
# CLUSTER="name=127.0.0.1:9001,127.0.0.1:9002" adds a cluster of one replica per shard to the
# server's remote_servers (the cluster test starts two servers with the same list), and
# ZOOKEEPER=127.0.0.1:PORT points it at a ZooKeeper (scripts/zookeeper.sh) so that DDL
# `ON CLUSTER` runs on every shard.
set -euo pipefail

cmd=${1:?usage: clickhouse.sh start|stop DIR [HTTP_PORT TCP_PORT]}
dir=${2:?usage: clickhouse.sh start|stop DIR [HTTP_PORT TCP_PORT]}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

install_server() {
    if command -v clickhouse-server >/dev/null; then return; fi
    echo "clickhouse.sh: installing Debian's clickhouse-server" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clickhouse-server clickhouse-client >&2
}

cluster_xml() {
    [ -n "${CLUSTER:-}" ] || return 0
    local name=${CLUSTER%%=*} hosts=${CLUSTER#*=}
    echo "    <remote_servers><$name>"
    local IFS=,
    for hp in $hosts; do
        echo "      <shard><replica><host>${hp%:*}</host><port>${hp##*:}</port></replica></shard>"
    done
    echo "    </$name></remote_servers>"
}

zookeeper_xml() {
    [ -n "${ZOOKEEPER:-}" ] || return 0
    echo "    <zookeeper><node><host>${ZOOKEEPER%:*}</host><port>${ZOOKEEPER##*:}</port></node></zookeeper>"
    echo "    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>"
}

case $cmd in
start)
    install_server
    http_port=${3:-$(free_port)}
    tcp_port=${4:-$(free_port)}
    mkdir -p "$dir"/{data,tmp,user_files,log,format_schemas}
    dir=$(cd "$dir" && pwd)
    cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><console>0</console></logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
$(cluster_xml)
$(zookeeper_xml)
</yandex>
XML
    cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default>
        <max_memory_usage>4000000000</max_memory_usage>
        <allow_experimental_low_cardinality_type>1</allow_experimental_low_cardinality_type>
    </default></profiles>
    <users><default>
        <password></password>
        <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
        <profile>default</profile><quota>default</quota>
    </default></users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
XML
    # clickhouse-server refuses to run as root unless the data directory is root's, which it is.
    nohup clickhouse-server --config-file="$dir/config.xml" --pid-file="$dir/server.pid" \
        >"$dir/log/stdout.log" 2>&1 &
    echo $! > "$dir/launcher.pid"
    url="http://127.0.0.1:$http_port"
    for _ in $(seq 1 300); do
        if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/ping", timeout=1)' "$url" 2>/dev/null; then
            echo "$url" > "$dir/url"
            echo "$tcp_port" > "$dir/tcp_port"
            echo "$url"
            exit 0
        fi
        if ! kill -0 "$(cat "$dir/launcher.pid")" 2>/dev/null; then
            echo "clickhouse.sh: server exited during start; last log lines:" >&2
            tail -20 "$dir/log/error.log" "$dir/log/stdout.log" >&2 || true
            exit 1
        fi
        sleep 0.1
    done
    echo "clickhouse.sh: no answer on $url/ping after 30 s" >&2
    exit 1
    ;;
stop|kill)
    signal=TERM
    [ "$cmd" = kill ] && signal=KILL
    for f in "$dir/server.pid" "$dir/launcher.pid"; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        kill -s "$signal" "$pid" 2>/dev/null || true
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$f"
    done
    ;;
*)
    echo "usage: clickhouse.sh start|stop|kill DIR [HTTP_PORT TCP_PORT]" >&2
    exit 2
    ;;
esac
