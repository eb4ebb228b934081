#!/usr/bin/env bash
# What a maintainer runs before publishing: restore, build, test, pack both packages into artifacts/packages, then
# install them into tests/MyTorch.Layers.PackageTests and test them there.
#
#   build/build.sh                      every step, in this order
#   build/build.sh pack package-test    only the named steps (restore, build, test, pack, package-test)
#
# Environment: CONFIGURATION (default Release).
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_NOLOGO=1 DOTNET_CLI_TELEMETRY_OPTOUT=1

configuration="${CONFIGURATION:-Release}"
packages="artifacts/packages"
package_tests="tests/MyTorch.Layers.PackageTests"

restore() { dotnet restore; }
build() { dotnet build --no-restore -c "$configuration"; }
test() { dotnet test --no-build -c "$configuration"; }

pack() {
    rm -rf "$packages"
    # ContinuousIntegrationBuild normalises source paths in the PDB, so the same commit packs the same bytes.
    dotnet pack src/MyTorch.Layers -c "$configuration" -o "$packages" -p:ContinuousIntegrationBuild=true
    dotnet pack src/MyTorch.Layers.Distributed -c "$configuration" -o "$packages" -p:ContinuousIntegrationBuild=true
}

package_test() {
    # The consumer restores into its own packages folder (its nuget.config); removing our package from it first
    # means the package just packed is the one installed, never one cached by an earlier run.
    rm -rf artifacts/package-tests/packages/mytorch.layers artifacts/package-tests/packages/mytorch.layers.distributed
    dotnet restore "$package_tests" --force
    dotnet test "$package_tests" --no-restore -c "$configuration"
}

steps=("$@")
if [ ${#steps[@]} -eq 0 ]; then
    steps=(restore build test pack package-test)
fi
for step in "${steps[@]}"; do
    case "$step" in
        restore) restore ;;
        build) build ;;
        test) test ;;
        pack) pack ;;
        package-test) package_test ;;
        *) echo "build/build.sh: unknown step '$step' (steps: restore build test pack package-test)" >&2; exit 2 ;;
    esac
done
