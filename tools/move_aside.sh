# move_aside ROOT NAME...: moves the entries ROOT/NAME that exist into a new folder
# ROOT/previous/<date-time>-XXXX/ and says where in one line. Sourced by tools/recipe.sh and
# test/train_common.sh: a rerun starts afresh, and an earlier run (or anything a user put
# there) is never deleted.
move_aside() {
  local root=$1 name aside
  shift
  local found=()
  for name in "$@"; do
    [ ! -e "$root/$name" ] || found+=("$root/$name")
  done
  [ ${#found[@]} -gt 0 ] || return 0
  mkdir -p "$root/previous"
  aside=$(mktemp -d "$root/previous/$(date +%Y%m%d-%H%M%S)-XXXX")
  mv -- "${found[@]}" "$aside/"
  echo "   the earlier run in $root moved to $aside (delete it when you no longer need it)"
}
