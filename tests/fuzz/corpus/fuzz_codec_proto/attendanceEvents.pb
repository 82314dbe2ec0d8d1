
$4dbe6f70-8192-43ab-9fbc-d7e8f90a1b2c6
2025-09-02T07:31:00+02:002025-09-02T07:31:00+02:002025-09-02T07:30:12+02:00"In*<
$6f708192-a3b4-45c6-97d8-f90a1b2c3d4eÖrjan ÅbergIngen2<
$0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0Märta ÅbergIngen:8
$5e6f7081-92a3-44b5-86c7-e8f90a1b2c3dAvdelning Ängen