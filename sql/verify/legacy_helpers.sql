do $$
begin
  assert kbmigrate.legacy_text('["a", "b"]') = 'a, b', 'legacy_text does not join arrays';
  assert kbmigrate.legacy_text('null') is null and kbmigrate.legacy_text('""') is null, 'legacy_text keeps empty values';
  assert kbmigrate.legacy_content('{"description": "d", "x": 1, "y": null}', array['X', 'Y'], array['x', 'y'])
         = E'd\nX: 1', 'legacy_content does not build Label: value lines';
end $$;
do $$
begin
  assert to_regprocedure('kbmigrate.import_legacy(jsonb)') is not null, 'kbmigrate.import_legacy(jsonb) is missing';
  assert not has_function_privilege('authenticated', 'kbmigrate.import_legacy(jsonb)', 'execute'),
         'the API roles can execute kbmigrate.import_legacy(jsonb)';
end $$;
