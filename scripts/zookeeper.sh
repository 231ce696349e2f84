#!/usr/bin/env bash
# A private ZooKeeper for the ClickHouse cluster test (distributed DDL `ON CLUSTER` needs one):
# its own data directory, loopback only, a free port. Installs Debian's zookeeper when missing.
#
#   scripts/zookeeper.sh start DIR    # prints HOST:PORT once it answers `ruok`
#   scripts/zookeeper.sh stop DIR
set -euo pipefail

cmd=${1:?usage: zookeeper.sh start|stop DIR}
dir=${2:?usage: zookeeper.sh start|stop DIR}

case $cmd in
start)
    if [ ! -f /usr/share/java/zookeeper.jar ]; then
        echo "zookeeper.sh: installing Debian's zookeeper" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zookeeper >&2
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$dir/data"
    dir=$(cd "$dir" && pwd)
    cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
CFG
    nohup java -Xmx256m -cp "/usr/share/java/zookeeper.jar:/usr/share/java/*" \
        org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" >"$dir/server.log" 2>&1 &
    echo $! > "$dir/server.pid"
    for _ in $(seq 1 300); do
        if [ "$(timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port; echo ruok >&3; cat <&3" 2>/dev/null)" = imok ]; then
            echo "127.0.0.1:$port"
            exit 0
        fi
        kill -0 "$(cat "$dir/server.pid")" 2>/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "zookeeper.sh: no answer on 127.0.0.1:$port after 30 s" >&2
    exit 1
    ;;
stop)
    [ -f "$dir/server.pid" ] || exit 0
    pid=$(cat "$dir/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/server.pid"
    ;;
*)
    echo "usage: zookeeper.sh start|stop DIR" >&2
    exit 2
    ;;
esac
