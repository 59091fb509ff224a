// Prints every key path of an installed srt's settings schema (its zod schema in
// dist/sandbox/sandbox-config.js), one per line: `network.allowedDomains`, array elements as
// `[]`, record values as `.*`. Used by tests/srt_keys.rs: node srt-keys.mjs PACKAGE_DIR
const dir = process.argv[2];
const config = await import(dir + '/dist/sandbox/sandbox-config.js');
const keys = new Set();
function visit(schema, path) {
  const def = schema?._def;
  if (!def) return;
  switch (def.typeName) {
    case 'ZodObject':
      for (const [name, child] of Object.entries(def.shape())) {
        const p = path ? `${path}.${name}` : name;
        keys.add(p);
        visit(child, p);
      }
      return;
    case 'ZodEffects': return visit(def.schema, path);
    case 'ZodOptional': case 'ZodNullable': case 'ZodDefault': case 'ZodReadonly':
    case 'ZodCatch': case 'ZodBranded':
      return visit(def.innerType ?? def.type, path);
    case 'ZodLazy': return visit(def.getter(), path);
    case 'ZodPipeline': visit(def.in, path); return visit(def.out, path);
    case 'ZodArray': return visit(def.type, `${path}[]`);
    case 'ZodTuple': for (const item of def.items) visit(item, `${path}[]`); return;
    case 'ZodRecord': return visit(def.valueType, `${path}.*`);
    case 'ZodUnion': case 'ZodDiscriminatedUnion':
      for (const option of def.options) visit(option, path);
      return;
    case 'ZodIntersection': visit(def.left, path); return visit(def.right, path);
    default: return;
  }
}
if (!config.SandboxRuntimeConfigSchema) {
  console.error('no SandboxRuntimeConfigSchema export in ' + dir);
  process.exit(2);
}
visit(config.SandboxRuntimeConfigSchema, '');
if (keys.size === 0) {
  console.error('no keys found: the schema layout changed');
  process.exit(2);
}
console.log([...keys].sort().join('\n'));
