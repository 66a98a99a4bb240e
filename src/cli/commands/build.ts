import { formatPlatform, hostPlatform, parsePlatformList, type Platform } from '../../oci/index.js';
import { buildDockerfile, formatPlan, parseSecretSpec, planDockerfile, type BuildOptions, type OutputSpec } from '../../build/index.js';
import { boolOpt, listOpt, readStdin, stringOpt, usageError, type Command } from '../command.js';

function keyValues(items: string[], flag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const i = item.indexOf('=');
    if (i <= 0) {
      // `--build-arg NAME` takes the value from the environment, as docker does.
      const v = process.env[item];
      if (i < 0 && flag === '--build-arg' && v !== undefined) {
        out[item] = v;
        continue;
      }
      if (i < 0 && flag === '--build-arg') continue;
      throw usageError(`${flag} "${item}": expected KEY=VALUE`, 'build');
    }
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

/** The keys each `--output` type takes (buildx's names; `type` aside). */
const OUTPUT_KEYS: Record<string, readonly string[]> = {
  oci: ['dest', 'tar', 'name'],
  docker: ['dest', 'tar', 'name'],
  local: ['dest'],
  registry: ['name', 'push', 'push-by-digest', 'name-canonical', 'oci-mediatypes'],
  image: ['name', 'push', 'push-by-digest', 'name-canonical', 'oci-mediatypes'],
};

/** Splits buildx's CSV: `type=image,"name=a:1,b:1"` keeps the quoted comma. */
function csvFields(text: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i] as string;
    if (c === '"') {
      if (quoted && text[i + 1] === '"') {
        cur += '"';
        i++;
      } else quoted = !quoted;
    } else if (c === ',' && !quoted) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  if (quoted) throw usageError(`--output "${text}": unterminated quote`, 'build');
  out.push(cur);
  return out;
}

/** Parses buildx's `--output type=oci,dest=out.tar` (and the `-o dir` shorthand for type=local). */
export function parseOutput(text: string): OutputSpec {
  if (text === '-') throw usageError('--output - (stdout) is not supported; give dest=FILE', 'build');
  if (!text.includes('=')) return { type: 'local', dest: text };
  const fields: Record<string, string> = {};
  for (const part of csvFields(text)) {
    const i = part.indexOf('=');
    if (i <= 0) throw usageError(`--output "${text}": expected key=value pairs, got "${part}"`, 'build');
    const key = part.slice(0, i).trim();
    if (key in fields) throw usageError(`--output "${text}": ${key} is given twice`, 'build');
    fields[key] = part.slice(i + 1).trim();
  }
  const type = fields.type;
  const keys = type !== undefined ? OUTPUT_KEYS[type] : undefined;
  if (!keys) throw usageError(`--output "${text}": unknown type "${type ?? ''}" (known: ${Object.keys(OUTPUT_KEYS).join(', ')})`, 'build');
  for (const key of Object.keys(fields)) {
    if (key !== 'type' && !keys.includes(key)) throw usageError(`--output "${text}": type=${type} does not take "${key}" (it takes ${keys.join(', ')})`, 'build');
  }
  const need = (k: string): string => {
    const v = fields[k];
    if (!v) throw usageError(`--output "${text}": type=${type} needs ${k}=...`, 'build');
    return v;
  };
  const flag = (k: string): boolean | undefined => {
    const v = fields[k];
    if (v === undefined) return undefined;
    if (v !== 'true' && v !== 'false') throw usageError(`--output "${text}": ${k}=${v}: expected true or false`, 'build');
    return v === 'true';
  };
  const dest = (): string => {
    const d = need('dest');
    if (d === '-') throw usageError(`--output "${text}": dest=- (stdout) is not supported; give dest=FILE`, 'build');
    return d;
  };
  const name = (): { name?: string } => {
    if (fields.name === undefined) return {};
    if (fields.name === '') throw usageError(`--output "${text}": name= is empty`, 'build');
    return { name: fields.name };
  };
  switch (type) {
    case 'oci': {
      const tar = flag('tar');
      return { type: 'oci', dest: dest(), ...(tar === false ? { tar } : {}), ...name() };
    }
    case 'docker':
      if (flag('tar') === false) throw usageError(`--output "${text}": type=docker writes a tar only; for a directory use type=oci,tar=false`, 'build');
      return { type: 'docker', dest: dest(), ...name() };
    case 'local':
      return { type: 'local', dest: dest() };
    default: {
      // registry is image with push=true; image pushes only when asked, and otherwise names the result in the store.
      const push = flag('push') ?? type === 'registry';
      const byDigest = flag('push-by-digest') ?? false;
      // name-canonical changes nothing: archway's names are canonical already (docker.io/library/app:1).
      flag('name-canonical');
      const oci = flag('oci-mediatypes');
      const mediaTypes = oci !== undefined ? { ociMediatypes: oci } : {};
      if (push) return { type: 'registry', ...name(), ...(byDigest ? { pushByDigest: true } : {}), ...mediaTypes };
      if (byDigest) throw usageError(`--output "${text}": push-by-digest=true needs push=true`, 'build');
      return { type: 'store', ...name(), ...mediaTypes };
    }
  }
}

export const buildCommand: Command = {
  name: 'build',
  usage: '[OPTIONS] [CONTEXT]',
  summary: 'Build a Dockerfile for one or more platforms',
  description: `Builds every --platform at once: RUN steps of foreign platforms run under QEMU (see archway binfmt),
stages FROM --platform=$BUILDPLATFORM run natively. The result goes to the local store under the -t
names (one index for all platforms, a plain image for one), and with --push to the registry.
Outputs and names are checked before anything runs; the store is tagged last, after every output
(archives, pushes) succeeded, so a failed build or push leaves no new name in the store.

Outputs (--output, repeatable; buildx's keys):
  type=oci,dest=FILE[,tar=false][,name=REF]   OCI archive (tar=false: an OCI layout directory)
  type=docker,dest=FILE[,name=REF,...]        docker-archive for docker load (one platform)
  type=local,dest=DIR  (or -o DIR)            each platform's root filesystem
  type=registry[,name=REF,...][,push-by-digest=true]
  type=image[,name=REF,...][,push=true]       the local store (push=true: as type=registry)
  type=image and type=registry also take:
    name-canonical=true|false   accepted for buildx recipes; changes nothing, archway's names are
                                canonical already (app:1 is docker.io/library/app:1)
    oci-mediatypes=true|false   OCI media types (true, the default) or Docker schema 2 manifests
                                and manifest list (false); one choice for the whole build

Push by digest (--push-by-digest, or push-by-digest=true): every platform's image and, for several
platforms (or --index), the index over them are pushed by digest, without a tag, to each name's
repository. Assemble the runners' results afterwards with
  archway index create -t REG/app:1 REG/app@DIGEST1 REG/app@DIGEST2

Metadata (--metadata-file FILE), written after every build (stored, archived or pushed), as buildx's:
  containerimage.digest         the result: the index, or the image for one platform (what was pushed)
  containerimage.descriptor     its mediaType, digest and size
  containerimage.config.digest  the image's config (one platform only)
  image.name                    the pushed names, comma-separated (the repositories, with push by
                                digest), else the names in the store; absent when unnamed
  platforms, images             archway's: each platform's image digest (and its repository, with
                                push by digest)
FILE's directory must exist and be writable (checked before the build); FILE is replaced atomically.

Examples:
  archway build --platform linux/amd64,linux/arm64,linux/arm/v7 -t app:1 .
  archway build --platform linux/amd64,linux/arm64 -t registry.example.com/app:1 --push .
  archway build --platform linux/arm64 --output type=oci,dest=app.tar .
  archway build --platform linux/arm64 -o type=image,name=REG/app,push-by-digest=true,name-canonical=true,push=true --metadata-file m.json .`,
  options: {
    file: { type: 'string', short: 'f', help: 'FILE:the Dockerfile (default CONTEXT/Dockerfile; - reads it from stdin)' },
    platform: { type: 'string', multiple: true, help: 'PLATFORMS:target platforms, comma-separated; local is this host (the default)' },
    tag: { type: 'string', short: 't', multiple: true, help: 'NAME:name the result' },
    'build-arg': { type: 'string', multiple: true, help: 'KEY=VALUE:set a build argument' },
    target: { type: 'string', help: 'STAGE:build up to this stage' },
    push: { type: 'boolean', help: 'push every platform, then the index, to the registry in each -t name' },
    output: { type: 'string', short: 'o', multiple: true, help: 'SPEC:type=oci|docker|local,dest=PATH or type=registry|image[,name=REF] (see above)' },
    label: { type: 'string', multiple: true, help: 'KEY=VALUE:add a label to the image' },
    'no-cache': { type: 'boolean', help: 'run every step, ignoring the cache' },
    progress: { type: 'string', default: 'auto', help: 'MODE:auto, tty, plain or json' },
    network: { type: 'string', default: 'default', help: 'MODE:network for RUN steps: default, none or host' },
    jobs: { type: 'string', help: 'N:how many platforms build at once (default: all, up to 8; RUN steps never exceed the cores)' },
    'optional-platform': { type: 'string', multiple: true, help: 'PLATFORM:may fail (its base lacks it, it cannot run here, or a step fails); the result is published without it, with a warning' },
    index: { type: 'boolean', help: 'publish an index even for one platform' },
    'push-by-digest': { type: 'boolean', help: 'push each platform and the index by digest, without a tag (for builds split across CI runners)' },
    'metadata-file': { type: 'string', help: 'FILE:write the result digests as JSON, after every build (see above)' },
    'dry-run': { type: 'boolean', help: 'print the plan: per platform, the stages and steps that would run' },
    'insecure-registry': { type: 'string', multiple: true, help: 'HOST:talk to HOST over plain HTTP or unverified TLS' },
    secret: { type: 'string', multiple: true, help: 'id=ID,src=FILE|env=VAR:a secret for RUN --mount=type=secret (never stored in the image)' },
  },
  async run(ctx) {
    if (ctx.positionals.length > 1) throw usageError(`"archway build" takes one context, got ${ctx.positionals.join(' ')}`, 'build');
    // `local` is this host's platform, as in buildx.
    const platformText = listOpt(ctx, 'platform')
      .flatMap((p) => p.split(','))
      .map((p) => (p.trim() === 'local' ? formatPlatform(hostPlatform()) : p))
      .join(',');
    const platforms: Platform[] = platformText ? parsePlatformList(platformText) : [];
    const network = stringOpt(ctx, 'network') ?? 'default';
    if (!['default', 'none', 'host'].includes(network)) throw usageError(`--network "${network}": expected default, none or host`, 'build');
    const jobsText = stringOpt(ctx, 'jobs');
    if (jobsText !== undefined && !/^[1-9]\d*$/.test(jobsText)) throw usageError(`--jobs "${jobsText}": expected a positive number`, 'build');
    const outputs = listOpt(ctx, 'output').map(parseOutput);
    if (boolOpt(ctx, 'push')) outputs.push({ type: 'registry', ...(boolOpt(ctx, 'push-by-digest') ? { pushByDigest: true } : {}) });
    else if (boolOpt(ctx, 'push-by-digest')) outputs.push({ type: 'registry', pushByDigest: true });
    const opts: BuildOptions = {
      context: ctx.positionals[0] ?? '.',
      platforms,
      tags: listOpt(ctx, 'tag'),
      buildArgs: keyValues(listOpt(ctx, 'build-arg'), '--build-arg'),
      labels: keyValues(listOpt(ctx, 'label'), '--label'),
      noCache: boolOpt(ctx, 'no-cache'),
      network: network as BuildOptions['network'],
      outputs,
      optionalPlatforms: listOpt(ctx, 'optional-platform').flatMap((p) => parsePlatformList(p)),
      forceIndex: boolOpt(ctx, 'index'),
      insecureRegistries: listOpt(ctx, 'insecure-registry'),
      secrets: listOpt(ctx, 'secret').map(parseSecretSpec),
      env: ctx.env,
      signal: ctx.signal,
      progress: ctx.progress,
    };
    const file = stringOpt(ctx, 'file');
    // `-f -`: the Dockerfile from stdin, as buildx reads it (a Dockerfile, not a context: 4 MiB at most).
    if (file === '-') opts.dockerfileText = await readStdin(ctx, 4 * 1024 * 1024, '-f -');
    else if (file) opts.dockerfile = file;
    const target = stringOpt(ctx, 'target');
    if (target) opts.target = target;
    if (jobsText) opts.jobs = Number(jobsText);
    const meta = stringOpt(ctx, 'metadata-file');
    if (meta) opts.metadataFile = meta;
    if (boolOpt(ctx, 'dry-run')) {
      const { plan } = await planDockerfile(opts);
      for (const w of plan.warnings) ctx.stderr.write(`warning: ${w.file}:${w.line}: ${w.message}\n`);
      ctx.stdout.write(formatPlan(plan));
      return 0;
    }
    const started = Date.now();
    const result = await buildDockerfile(opts);
    const built = result.outcomes.filter((o) => !o.skipped).length;
    const lines = [`built ${built} platform${built === 1 ? '' : 's'} in ${((Date.now() - started) / 1000).toFixed(1)}s:`];
    for (const o of result.outcomes) {
      const failed = o.skipped ? `left out (optional): ${o.error?.split('\n')[0] ?? ''}` : `FAILED ${o.error?.split('\n')[0] ?? ''}`;
      lines.push(`  ${o.platform.padEnd(16)} ${o.ok ? `${o.descriptor?.digest ?? ''}  (${o.stepsRun} run, ${o.stepsCached} cached)` : failed}`);
    }
    if (result.root) lines.push(`${result.root.mediaType.includes('index') || result.root.mediaType.includes('list') ? 'index' : 'image'}: ${result.root.digest}`);
    for (const t of result.tags) lines.push(`tagged ${t}`);
    for (const a of result.advice) lines.push(`hint: ${a}`);
    ctx.stderr.write(`${lines.join('\n')}\n`);
    if (result.root) ctx.stdout.write(`${result.root.digest}\n`);
    if (result.outcomes.some((o) => !o.ok)) {
      ctx.stderr.write(`warning: published without ${result.outcomes.filter((o) => !o.ok).map((o) => o.platform).join(', ')}\n`);
    }
    return 0;
  },
};
