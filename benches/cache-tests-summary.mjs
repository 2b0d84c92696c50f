// Summarises cache-tests.fyi results (the JSON `npm run cli` prints) the way
// the suite's own pages count them: passes, failures of required tests,
// failures of optimal ones, and "check" tests answered yes/no, with setup,
// harness and dependency failures apart. Run from the suite's folder:
//   node /path/to/cache-tests-summary.mjs results.json [more.json ...]
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const suites = (await import(pathToFileURL(path.resolve('tests/index.mjs')))).default
const tests = new Map()
for (const suite of suites) {
  for (const test of suite.tests) tests.set(test.id, test)
}

function classify (id, results, seen = new Set()) {
  const test = tests.get(id)
  const result = results[id]
  if (result === undefined) return 'untested'
  if (test.depends_on && !seen.has(id)) {
    seen.add(id)
    for (const dep of test.depends_on) {
      if (!['pass', 'yes'].includes(classify(dep, results, seen))) return 'dependency_fail'
    }
  }
  if (Array.isArray(result) && result[0] === 'Setup') return 'setup_fail'
  if (result === false) return 'harness_fail'
  const kind = test.kind || 'required'
  if (kind === 'check') return result === true ? 'yes' : 'no'
  if (result === true) return 'pass'
  return kind === 'optimal' ? 'optional_fail' : 'fail'
}

for (const file of process.argv.slice(2)) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  const counts = {}
  const failed = []
  for (const id of tests.keys()) {
    const c = classify(id, results)
    counts[c] = (counts[c] || 0) + 1
    if (c === 'fail') failed.push(id)
  }
  console.log(`${path.basename(file)}: ${counts.pass || 0} passed, ${counts.fail || 0} failed` +
    ` (optional failed ${counts.optional_fail || 0}, checks yes/no ${counts.yes || 0}/${counts.no || 0},` +
    ` setup ${counts.setup_fail || 0}, dependency ${counts.dependency_fail || 0}, untested ${counts.untested || 0})`)
  if (process.env.SHOW_FAILED) console.log('  failed: ' + failed.join(' '))
}
