# Sourced by the launchers: run a command in the background and turn a stop signal into exactly one
# SIGTERM for it, then exit with the stop's status (128 + signal) once it has finished.
#   run_forwarding_stop CMD ARGS...                     TERM, INT and USR1 stop CMD
#   STOP_SIGNALS="USR1" run_forwarding_stop CMD ...     only these (SLURM signals job steps itself)
#   ON_STOP="scontrol requeue $SLURM_JOB_ID" ...        a command run after a stopped CMD finished

run_forwarding_stop() {
  local child rc sig
  "$@" &
  child=$!
  STOPPED_BY=""
  for sig in ${STOP_SIGNALS:-TERM INT USR1}; do
    # shellcheck disable=SC2064
    trap "_forward_stop $sig $child" "$sig"
  done
  # `wait` returns early when a trapped signal arrives: keep waiting until the child has ended.
  while true; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  if [[ -n "$STOPPED_BY" ]]; then
    [[ -n "${ON_STOP:-}" ]] && eval "$ON_STOP"
    exit $((128 + $(kill -l "$STOPPED_BY")))
  fi
  exit "$rc"
}

_forward_stop() {  # _forward_stop SIGNAL CHILD_PID: forward only the first stop
  if [[ -z "$STOPPED_BY" ]]; then
    STOPPED_BY=$1
    echo "launch: got SIG$1; asking the run to checkpoint and stop (SIGTERM to pid $2)" >&2
    kill -TERM "$2" 2>/dev/null
  fi
}
