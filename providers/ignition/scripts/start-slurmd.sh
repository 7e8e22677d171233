#!/usr/bin/env bash
# Start slurmd in configless mode: it fetches slurm.conf from the controller, so this
# node needs no Slurm configuration of its own.
set -euo pipefail
shopt -s inherit_errexit  # a failed step inside $(...) fails the script too
slurmd=@SLURMD@
conf_server=@CONF_SERVER@
registration=@REGISTRATION@  # named: slurmd -N NAME | dynamic: slurmd -Z --conf
node_name=@NODE_NAME@        # named: where NAME comes from (tag | hostname)
dynamic_conf=@DYNAMIC_CONF@
imds="${SHOAL_IMDS_ENDPOINT:-http://169.254.169.254}"
name_poll="${SHOAL_NAME_POLL:-2}"  # seconds between reads of a gang member's name tag
name_tries="${SHOAL_NAME_TRIES:-150}"

# One item of the instance metadata, through an IMDSv2 session token.
metadata() {
    local token
    token="$(curl -fsS --noproxy "*" --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 \
        -X PUT -H "X-aws-ec2-metadata-token-ttl-seconds: 300" "$imds/latest/api/token")"
    curl -fsS --noproxy "*" --retry 10 --retry-connrefused --retry-delay 1 --max-time 5 \
        -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"
}

case "$registration" in
    named)
        case "$node_name" in
            tag)
                # A multi-node job's instances are launched together tagged with the list of
                # their names (a hostlist: a,b or cloud[1-40]), then each is tagged with its
                # own: wait for it (a Slurm node name holds no comma and no bracket). Given up
                # after a while: systemd starts this again.
                name="$(metadata "tags/instance/@NODE_NAME_TAG@")"
                tries=0
                while [[ "$name" == *[,[]* ]]; do
                    if ((++tries > name_tries)); then
                        echo "still no Slurm node name of its own (tag lists $name)" >&2
                        exit 1
                    fi
                    sleep "$name_poll"
                    name="$(metadata "tags/instance/@NODE_NAME_TAG@")"
                done
                ;;
            hostname)
                name="$(metadata local-hostname)"
                name="${name%%.*}"
                ;;
            *)
                echo "unknown node name source $node_name" >&2
                exit 2
                ;;
        esac
        if [ -z "$name" ]; then
            echo "no Slurm node name for this instance" >&2
            exit 1
        fi
        echo "starting slurmd as node $name, configuration from $conf_server"
        exec "$slurmd" -D --conf-server "$conf_server" -N "$name"
        ;;
    dynamic)
        # named after its instance, so the controller's node and the cloud's instance match
        name="$(metadata instance-id)"
        args=(-Z -N "$name")
        # slurmctld drains a node registered with more memory than slurmd measures (Low
        # RealMemory) and the kernel shows less than the type's nominal memory: the lower
        declared="$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$dynamic_conf")"
        if [ -n "$declared" ]; then
            measured="$("$slurmd" -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')" || measured=""
            if [ -n "$measured" ] && ((declared > measured)); then
                echo "RealMemory $declared is more than slurmd measures: $measured" >&2
                dynamic_conf="${dynamic_conf/RealMemory=$declared/RealMemory=$measured}"
            fi
        fi
        if [ -n "$dynamic_conf" ]; then
            args+=(--conf "$dynamic_conf")
        fi
        echo "starting dynamic slurmd $name (${dynamic_conf:-no features}), configuration from $conf_server"
        exec "$slurmd" -D --conf-server "$conf_server" "${args[@]}"
        ;;
    *)
        echo "unknown registration $registration" >&2
        exit 2
        ;;
esac
