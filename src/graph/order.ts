import type { CopySource, StageNode, Step } from './types.js';

function sourceStage(s: CopySource | undefined): StageNode | undefined {
  return s !== undefined && s.kind === 'stage' ? s.stage : undefined;
}

/** The stages a stage needs directly: its base stage and the stages of COPY --from and RUN --mount from=. */
export function stageDependencies(stage: StageNode): StageNode[] {
  const out: StageNode[] = [];
  const add = (s: StageNode | undefined): void => {
    if (s !== undefined && !out.includes(s)) out.push(s);
  };
  if (stage.base.kind === 'stage') add(stage.base.stage);
  for (const step of stage.steps) for (const s of stepSources(step)) add(s);
  return out;
}

function stepSources(step: Step): Array<StageNode | undefined> {
  if (step.kind === 'copy') return [sourceStage(step.from)];
  if (step.kind === 'run') return step.mounts.map((m) => sourceStage(m.from)).filter((s): s is StageNode => s !== undefined);
  return [];
}

/** Unique stages reachable from the roots, each after everything it needs (depth-first post-order). */
export function topologicalStages(roots: readonly StageNode[]): StageNode[] {
  const out: StageNode[] = [];
  const seen = new Set<string>();
  const visit = (s: StageNode): void => {
    if (seen.has(s.id)) return;
    seen.add(s.id);
    for (const d of stageDependencies(s)) visit(d);
    out.push(s);
  };
  for (const r of roots) visit(r);
  return out;
}
