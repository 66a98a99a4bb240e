import { formatPlatform } from '../oci/index.js';
import type { BuildPlan, StageNode, Step } from './types.js';

function stageLabel(s: StageNode): string {
  return s.name !== undefined ? `stage ${s.index} "${s.name}"` : `stage ${s.index}`;
}

function baseLabel(s: StageNode): string {
  switch (s.base.kind) {
    case 'scratch':
      return 'scratch';
    case 'image':
      return `${s.base.ref} (${formatPlatform(s.base.platform)})`;
    case 'stage':
      return stageLabel(s.base.stage);
  }
}

function stepLabel(step: Step): string {
  return `${String(step.line).padStart(4)}: ${step.display}`;
}

function shortId(id: string): string {
  return id.replace(/^sha256:/, '').slice(0, 12);
}

/**
 * A human-readable plan for `archway build --dry-run`: per target platform the stages in the order
 * they would run, the platform each runs on, its steps, and which stages are shared between targets.
 */
export function formatPlan(plan: BuildPlan): string {
  const lines: string[] = [];
  const multi = plan.targets.length > 1;
  for (const target of plan.targets) {
    const tp = formatPlatform(target.platform);
    lines.push(`platform ${tp}: target ${stageLabel(target.stage)}`);
    const order = plan.stages.filter((s) => s.targetPlatforms.some((p) => formatPlatform(p) === tp));
    for (const s of order) {
      const shared = s.targetPlatforms.length > 1 && multi ? ` shared with ${s.targetPlatforms.map(formatPlatform).filter((p) => p !== tp).join(', ')}` : '';
      lines.push(`  ${stageLabel(s)} [${shortId(s.id)}] on ${formatPlatform(s.platform)} from ${baseLabel(s)}${shared}`);
      for (const step of s.steps) lines.push(`    ${stepLabel(step)}`);
    }
  }
  if (plan.warnings.length > 0) {
    lines.push('warnings:');
    for (const w of plan.warnings) lines.push(`  ${w.file}:${w.line}:${w.column}: ${w.message} [${w.kind}]`);
  }
  return lines.join('\n') + '\n';
}
